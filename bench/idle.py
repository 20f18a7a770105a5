"""IMAP IDLE: from delivery into the Dovecot folder to the message stored, and the listener's
memory with many channels open.

`python -m bench idle` (options after the name: `--channels 50 --deliveries 200 --rate 10`,
`--memory-channels 1000`, 0 skips a part). Postroom runs as `make run` runs it, in processes of
its own against a fresh SQLite database: `manage.py listen` and a Celery worker (2 processes, the
laptop default) on the file-system broker. No beat runs, so every message is stored by a poll
the listener asked for. Deliveries go straight into the Maildir (tests/servers/dovecot.py) at a
steady rate to channels chosen at random; latency is stored_at minus the moment of the rename
into new/. Memory is the listener's resident set (VmRSS) before any channel and with all of them
on push, over TLS. Figures are printed beside their targets, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.ingest import ROOT, _django, _django_env, _met

TARGET_P95 = 1.0
# For the memory run: room for a thousand IMAPS sessions (Dovecot keeps a login process, the
# TLS proxy, and an imap process per session), and sessions past the inotify limit (see
# tests/servers/dovecot.py) looking for mail every minute, not every second, so a thousand of
# them do not load the machine. Appended to the test config; a later setting wins.
MANY_SESSIONS = """
mailbox_idle_check_interval = 60 secs
default_client_limit = 5000
service imap-login {
  process_limit = 1500
}
service imap {
  process_limit = 1500
}
"""


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="postroom-bench-idle-") as tmp:
        if args.deliveries:
            with _dovecot(Path(tmp) / "dovecot-latency") as server:
                _latency_run(server, args, Path(tmp))
                _inotify_note(server)
        if args.memory_channels:
            with _dovecot(Path(tmp) / "dovecot-memory", MANY_SESSIONS) as server:
                _memory_run(server, args.memory_channels, Path(tmp))
    print("load average      {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench idle")
    parser.add_argument("--channels", type=int, default=50, help="IDLE channels for latency")
    parser.add_argument("--deliveries", type=int, default=200, help="messages (0: skip)")
    parser.add_argument("--rate", type=float, default=10.0, help="deliveries per second")
    parser.add_argument("--memory-channels", type=int, default=1000, help="(0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


@contextlib.contextmanager
def _dovecot(root: Path, extra_config: str = ""):
    from tests.servers.dovecot import Dovecot, DovecotError, Ports  # a test extra

    root.mkdir()
    server = Dovecot(root, extra_config=extra_config)
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except DovecotError as error:  # free ports race with the rest of the machine
                if "Address already in use" not in str(error) or attempt == 2:
                    raise
                server.ports = Ports.pick()
        yield server
    finally:
        server.close()


# --- Latency ----------------------------------------------------------------------------------


def _latency_run(server, args: argparse.Namespace, tmp: Path) -> None:
    users = [server.add_user() for _ in range(args.channels)]
    var = tmp / "var-latency"
    env = _django_env(var)
    _phase("channels", env, _spec(server, users, poll=True))  # cursors: "from now on"
    worker = _Process(var, "worker", env, "-m", "celery", "-A", "channels_app", "worker",
                      "--concurrency=2", "--loglevel=WARNING")  # fmt: skip
    listener = _Process(var, "listen", env, "manage.py", "listen")
    try:
        _wait_for_push(var, args.channels, listener, timeout=120)
        time.sleep(3)  # the listener polls each channel once it listens: let those pass
        delivered = _deliver(server, users, args)
        stored = _wait_for_stored(var, delivered, timeout=120)
    except RuntimeError:
        for process in (listener, worker):
            print(f"--- {process.log.name}\n{process.log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        listener.stop()
        worker.stop()
    latencies = sorted(stored[msgid] - at for msgid, at in delivered.items())
    _print_latency(args, latencies)


def _deliver(server, users, args: argparse.Namespace) -> dict[str, float]:
    """Message-ID -> the wall-clock time its file appeared in the folder."""
    rng = random.Random(args.seed)
    delivered = {}
    start = time.monotonic()
    for number in range(args.deliveries):
        # Evenly paced, each moment shifted at random within its slot.
        due = start + (number + rng.random()) / args.rate
        time.sleep(max(0.0, due - time.monotonic()))
        msgid = f"<idle-bench-{number}-{rng.getrandbits(32):08x}@example.org>"
        server.deliver(rng.choice(users), _message(number, msgid))
        delivered[msgid] = time.time()
    return delivered


def _message(number: int, msgid: str) -> bytes:
    return (
        f"From: Carol Customer <carol{number}@example.org>\r\nTo: support@example.test\r\n"
        f"Subject: Parcel {number} has not arrived\r\nMessage-ID: {msgid}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello, I ordered parcel {number} last week and it is still not here.\r\n"
    ).encode()


def _wait_for_stored(var: Path, delivered: dict[str, float], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _query(var, "select message_id, stored_at from mailboxes_inboundmessage")
        stored = {msgid: _epoch(at) for msgid, at in rows if msgid in delivered}
        if len(stored) == len(delivered):
            return stored
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(stored)} of {len(delivered)} stored in {timeout} s")
        time.sleep(0.5)


def _epoch(stored_at: str) -> float:
    return datetime.fromisoformat(stored_at).replace(tzinfo=UTC).timestamp()


def _print_latency(args: argparse.Namespace, latencies: list[float]) -> None:
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(
        f"latency           {len(latencies)} deliveries over {args.channels} IDLE channels, "
        f"{args.rate:g}/s, delivery into the folder -> stored"
    )
    print(
        f"  median {statistics.median(latencies) * 1000:5.0f} ms   p95 {p95 * 1000:5.0f} ms   "
        f"min {latencies[0] * 1000:4.0f} ms   max {latencies[-1] * 1000:5.0f} ms"
    )
    print(f"  target p95 < {TARGET_P95:g} s: {_met(p95 < TARGET_P95)}")
    print()


# --- Memory -----------------------------------------------------------------------------------


def _memory_run(server, count: int, tmp: Path) -> None:
    users = [server.add_user() for _ in range(count)]
    var = tmp / "var-memory"
    env = _django_env(var)
    _phase("migrate", env, {})
    listener = _Process(var, "listen", env, "manage.py", "listen")
    try:
        _wait_for_push(var, 0, listener, timeout=60)
        time.sleep(3)
        before = _status(listener.pid)
        started = time.monotonic()
        _phase("channels", env, _spec(server, users, poll=False))
        _wait_for_push(var, count, listener, timeout=600)
        connected_in = time.monotonic() - started
        time.sleep(3)
        after = _status(listener.pid)
    finally:
        listener.stop()
    grown = after["VmRSS"] - before["VmRSS"]
    print(f"memory            the listener with {count} IDLE channels open (IMAPS)")
    print(
        f"  RSS {before['VmRSS'] / 1024:5.1f} MiB with none, {after['VmRSS'] / 1024:5.1f} MiB "
        f"with {count} ({grown / count:.1f} KiB per channel); {after['Threads']} threads"
    )
    print(f"  all {count} on push {connected_in:.1f} s after they were created")
    print()


def _status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            fields[name] = int(value.split()[0])
    return fields


# --- Processes and the database ---------------------------------------------------------------


class _Process:
    """A Postroom process of the bench, its output in a file under var/."""

    def __init__(self, var: Path, name: str, env: dict[str, str], *argv: str) -> None:
        self.log = var / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.log.stem} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_for_push(var: Path, count: int, listener: _Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    sql = "select count(*) from mailboxes_mailbox where push_state = 'push'"
    while _query(var, sql)[0][0] < count or "IMAP IDLE) as" not in listener.log.read_text():
        listener.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{_query(var, sql)[0][0]} of {count} channels on push")
        time.sleep(0.2)


def _query(var: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(var / "postroom.sqlite3", timeout=30) as db:
        return db.execute(sql).fetchall()


def _spec(server, users, *, poll: bool) -> dict:
    return {
        "host": server.host,
        "port": server.ports.imaps,
        "users": [[u.name, u.password] for u in users],
        "poll": poll,
    }


def _phase(phase: str, env: dict[str, str], spec: dict) -> None:
    command = [sys.executable, "-m", "bench.idle", phase, json.dumps(spec)]
    subprocess.run(command, env=env, cwd=ROOT, check=True)


def _inotify_note(server) -> None:
    """Say so when Dovecot ran out of inotify instances (it then looks every second)."""
    seen = server.log_path.read_text(errors="replace").count("Inotify instance limit")
    if seen:
        print(f"note              {seen} Dovecot session(s) found no inotify instance left for")
        print("                  the mail uid (fs.inotify.max_user_instances, shared with every")
        print("                  Dovecot on the machine): those looked for new mail every second")
        print("                  instead of being told at once.")
        print()


# --- The children -----------------------------------------------------------------------------


def phase_migrate(spec: dict) -> None:
    _django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def phase_channels(spec: dict) -> None:
    """Create a channel per user (and poll each once: the cursor, "from now on")."""
    phase_migrate(spec)
    from mailboxes.models import Mailbox
    from pollers.services import mailbox_poll

    for name, password in spec["users"]:
        channel = Mailbox.objects.create(
            name=f"Support {name}",
            email_address=f"{name}@example.test",
            incoming_host=spec["host"],
            incoming_port=spec["port"],
            incoming_security="ssl",
            trust_self_signed=True,
            username=name,
            password=password,
            refresh_interval=3600,
            smtp_host="127.0.0.1",
            smtp_port=25,
        )
        if spec["poll"]:
            mailbox_poll(mailbox_id=channel.pk)


if __name__ == "__main__":
    globals()[f"phase_{sys.argv[1]}"](json.loads(sys.argv[2]))
