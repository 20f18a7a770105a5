"""First sync: importing "everything" from a folder of N older messages, in slices as the worker
runs them, with each N in a fresh process so its peak RSS is its own.

`python -m bench first_sync` (or `--n 1000 5000`). Memory should stay flat as N grows: the
import reads the folder in size-bounded batches and keeps no per-message state beyond UIDs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import _child, _django, _django_env, _met, _spec, _warm, generate

TARGET_GROWTH = 0.10  # peak RSS at the largest N within 10 % of the smallest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench first_sync")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args(argv or [])
    from tests.servers.dovecot import start_dovecot  # pytest is a test extra: imported only here

    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        (Path(tmp) / "dovecot").mkdir()
        server = start_dovecot(Path(tmp) / "dovecot")
        try:
            results = [_run(server, n, Path(tmp)) for n in args.n]
        finally:
            server.close()
    low, high = results[0], results[-1]
    if low is not high:
        growth = high["peak_mb"] / low["peak_mb"] - 1
        print(
            f"memory            {growth:+.1%} peak RSS from N={low['messages']} to "
            f"N={high['messages']}: target within {TARGET_GROWTH:.0%}: "
            f"{_met(growth <= TARGET_GROWTH)}"
        )


def _run(server, n: int, tmp: Path) -> dict:
    user = server.add_user()
    spec = _spec(server, [user])
    env = _django_env(tmp / f"var-{n}")
    for raw in generate(n):
        server.deliver(user, raw)
    _child("setup", env, spec)  # connected after the mail arrived: all of it is history
    _warm(server, user)
    result = _child("import", env, spec, module="bench.first_sync")
    print(
        f"N = {n}: imported {result['messages']} in {result['seconds']:.1f} s "
        f"({result['rate']:.0f} messages/s, {result['slices']} slices), "
        f"peak RSS {result['peak_mb']:.0f} MB"
    )
    return result


def phase_import(spec: dict) -> dict:
    _django()
    from mailboxes.first_sync import first_sync_choose
    from mailboxes.models import InboundMessage, Mailbox
    from pollers.history import history_import_slice

    mailbox = Mailbox.objects.get()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)
    started, slices = time.perf_counter(), 1
    while history_import_slice(mailbox_id=mailbox.pk, slice_seconds=5).more:
        slices += 1
    seconds = time.perf_counter() - started
    mailbox.refresh_from_db()
    if mailbox.import_state != Mailbox.ImportState.DONE:
        raise RuntimeError(f"import ended {mailbox.import_state}: {mailbox.import_message}")
    messages = InboundMessage.objects.filter(mailbox=mailbox).count()
    return {"messages": messages, "seconds": seconds, "slices": slices}


if __name__ == "__main__":
    phase = sys.argv[1]
    outcome = globals()[f"phase_{phase}"](json.loads(sys.argv[2]))
    outcome["rate"] = outcome["messages"] / outcome["seconds"]
    print(json.dumps(outcome))
