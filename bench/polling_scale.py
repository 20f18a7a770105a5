"""Polling scale: 2,000 channels with no new mail, 2 Celery worker processes, PostgreSQL, Redis.

`python -m bench polling_scale` (or `--channels 500 --workers 2`). Every channel is made due
at once and beat's dispatcher task enqueues them all, as it does when their refresh intervals
come round together; the figure is how fast two workers get through them: polls per second,
and so the shortest refresh interval at which 2,000 channels are polled on time. The first
round sets each channel's cursor; the second, measured, is the steady state: connect, log in,
check UIDVALIDITY and UIDNEXT, find nothing, log out, record the poll.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.ingest import ROOT, _django, _django_env, _spec, channel_unsaved


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    from tests.servers.dovecot import start_dovecot  # pytest is a test extra: imported only here

    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp, backends() as urls:
        (Path(tmp) / "dovecot").mkdir()
        server = start_dovecot(Path(tmp) / "dovecot")
        try:
            users = [server.add_user() for _ in range(args.channels)]
            env = {**_django_env(Path(tmp) / "var"), **urls}
            spec = _spec(server, users)
            _phase("setup", env, spec)
            with workers(env, args.workers, Path(tmp)):
                rounds = [_phase("round", env, spec) for _ in range(2)]
        finally:
            server.close()
    first, steady = rounds
    rate = steady["polls"] / steady["seconds"]
    print(f"channels          {args.channels} (no new mail), {args.workers} worker processes")
    print(f"first round       {first['polls'] / first['seconds']:7.1f} polls/s (cursors set)")
    print(f"steady state      {rate:7.1f} polls/s, errors {steady['errors']}")
    print(f"keeps up with     a refresh interval of {args.channels / rate:.0f} s or longer")
    print("load average      {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench polling_scale")
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    return parser.parse_args(argv)


@contextlib.contextmanager
def backends() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL and Redis (tests/servers/), as DATABASE_URL and CELERY_BROKER_URL."""
    from tests.servers import postgres, redis

    database = postgres.start()
    try:
        broker = redis.start()
        try:
            url = database.create_database("postroom")
            yield {"DATABASE_URL": url, "CELERY_BROKER_URL": broker.url()}
        finally:
            broker.stop()
    finally:
        database.stop()


@contextlib.contextmanager
def workers(env: dict[str, str], count: int, log_dir: Path) -> Iterator[None]:
    """`count` Celery worker processes of one pool process each, as `launcher worker` runs."""
    argv = [sys.executable, "-m", "celery", "-A", "channels_app", "worker", "--concurrency=1"]
    processes = []
    for n in range(count):
        with (log_dir / f"worker{n}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [*argv, "-n", f"bench{n}@%h"], cwd=ROOT, env=env, stdout=log, stderr=log
                )
            )
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def _phase(phase: str, env: dict[str, str], spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.polling_scale", phase, json.dumps(spec)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def phase_setup(spec: dict) -> dict:
    """Migrate and create the channels (in bulk: the figure is about polling, not the admin)."""
    _django()
    from django.core.management import call_command

    from mailboxes.models import Mailbox

    call_command("migrate", verbosity=0)
    Mailbox.objects.bulk_create(
        channel_unsaved(spec, name, password) for name, password in spec["users"]
    )
    return {}


def phase_round(spec: dict) -> dict:
    """Make every channel due, let the dispatcher task enqueue them, wait until all polled."""
    _django()
    from django.db.models import Q
    from django.utils import timezone

    from mailboxes.models import Mailbox
    from pollers.tasks import dispatch_due_polls

    Mailbox.objects.update(next_poll_at=timezone.now())
    started, since = time.perf_counter(), timezone.now()
    while dispatch_due_polls():  # what beat runs; up to 500 channels a call
        pass
    total = len(spec["users"])
    while Mailbox.objects.filter(last_polled_at__gte=since).count() < total:
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    errors = Mailbox.objects.filter(~Q(last_error=""), last_error_at__gte=since).count()
    return {"polls": total, "seconds": seconds, "errors": errors}


if __name__ == "__main__":
    phase = sys.argv[1]
    print(json.dumps(globals()[f"phase_{phase}"](json.loads(sys.argv[2]))))
