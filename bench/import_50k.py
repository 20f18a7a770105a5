"""A 50,000-message first import on PostgreSQL while new mail keeps arriving: rate, peak memory.

`python -m bench import_50k` (or `--n 5000`). A channel connects to a folder of N older text
messages (bench/ingest.py's generator, without the attachments, so 50,000 fit in minutes) and
the administrator chooses "everything". The import runs in 5-second slices, as the worker runs
them, with a poll of new mail between slices, as the queue interleaves them; meanwhile two new
messages a second arrive. Printed: the import's rate, the process's peak RSS, and how much of
the new mail the polls stored while the import ran.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.ingest import (
    _alternative,
    _child,
    _django,
    _django_env,
    _headers,
    _plain,
    _spec,
    _warm,
)
from bench.polling_scale import backends

ARRIVALS_PER_SECOND = 2
SLICE_SECONDS = 5
NEW_SUBJECT = "Arrived during the import"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench import_50k")
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args(argv or [])
    from tests.servers.dovecot import start_dovecot  # pytest is a test extra: imported only here

    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp, backends() as urls:
        (Path(tmp) / "dovecot").mkdir()
        server = start_dovecot(Path(tmp) / "dovecot")
        try:
            user = server.add_user()
            started = time.perf_counter()
            size = sum(server.deliver(user, raw).stat().st_size for raw in text_mail(args.n))
            print(f"delivered         {args.n:,} messages, {size / 2**20:.0f} MB, "
                  f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
            spec = _spec(server, [user])
            env = {**_django_env(Path(tmp) / "var"), **urls}
            _child("setup", env, spec)  # connected after the mail arrived: all of it is history
            _warm(server, user)
            with arriving(server, user) as arrived:
                result = _child("import", env, spec, module="bench.import_50k")
        finally:
            server.close()
    print(f"imported          {result['messages']:,} in {result['seconds']:.0f} s "
          f"({result['rate']:.0f} messages/s, {result['slices']} slices)")  # fmt: skip
    print(f"peak RSS          {result['peak_mb']:.0f} MB (the worker process)")
    print(f"new mail          {arrived[0]} arrived during the import, {result['new_stored']} "
          f"stored by the polls between slices before it ended")  # fmt: skip
    print("load average      {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))


def text_mail(n: int, seed: int = 1) -> Iterator[bytes]:
    """bench/ingest.py's headers and bodies, text and HTML only: a contact center's usual mail."""
    rng = random.Random(seed)
    history: list = []
    for i in range(n):
        head, subject, msgid, refs = _headers(rng, i, history)
        history.append((msgid, subject, refs))
        yield head + (_alternative(rng) if rng.random() < 0.3 else _plain(rng))


class arriving:  # noqa: N801 - used as a context manager, named for what it does
    """New mail, ARRIVALS_PER_SECOND a second, from a thread, until the block ends."""

    def __init__(self, server, user) -> None:
        self.server, self.user = server, user
        self.count = [0]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> list[int]:
        self.thread.start()
        return self.count

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(1 / ARRIVALS_PER_SECOND):
            self.count[0] += 1
            raw = (
                f"From: New Customer <new{self.count[0]}@example.org>\r\n"
                f"To: support@example.test\r\nSubject: {NEW_SUBJECT} {self.count[0]}\r\n"
                f"Message-ID: <new-{self.count[0]}@example.org>\r\n\r\nHello\r\n"
            )
            self.server.deliver(self.user, raw.encode())


def phase_import(spec: dict) -> dict:
    _django()
    from mailboxes.first_sync import first_sync_choose
    from mailboxes.models import InboundMessage, Mailbox
    from pollers.history import history_import_slice
    from pollers.services import mailbox_poll

    mailbox = Mailbox.objects.get()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)
    started, slices = time.perf_counter(), 1
    while history_import_slice(mailbox_id=mailbox.pk, slice_seconds=SLICE_SECONDS).more:
        slices += 1
        mailbox_poll(mailbox_id=mailbox.pk)  # new mail, queued behind this slice
    seconds = time.perf_counter() - started
    mailbox.refresh_from_db()
    if mailbox.import_state != Mailbox.ImportState.DONE:
        raise RuntimeError(f"import ended {mailbox.import_state}: {mailbox.import_message}")
    rows = InboundMessage.objects.filter(mailbox=mailbox)
    new = rows.filter(subject__startswith=NEW_SUBJECT).count()
    return {
        "messages": rows.count() - new,
        "seconds": seconds,
        "slices": slices,
        "new_stored": new,
    }


if __name__ == "__main__":
    outcome = globals()[f"phase_{sys.argv[1]}"](json.loads(sys.argv[2]))
    outcome["rate"] = outcome["messages"] / outcome["seconds"]
    print(json.dumps(outcome))
