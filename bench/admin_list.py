"""The admin's channel list with 2,000 channels on PostgreSQL: render time and query count.

`python -m bench admin_list` (or `--channels 2000 --messages 10 --rounds 30`). A throwaway
PostgreSQL (tests/servers/postgres.py) in a child process of its own, DEBUG off (so with the
hashed static files); the channels, with a few stored messages each so the per-channel counts
on the list have rows to count, are written with bulk_create. A superuser then loads
/admin/mailboxes/mailbox/ through Django's test client: the first page, a search, a status
filter and the last page. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.ingest import _child, _django, _django_env
from bench.pages import page_timings
from bench.polling_scale import backends

PATH = "/admin/mailboxes/mailbox/"
VIEWS = {
    "first page": {},
    "search": {"q": "Support 1234"},
    "status filter": {"status__exact": "error"},
}
BATCH = 5000
PER_PAGE = 100  # the admin's list_per_page


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    spec = {"channels": args.channels, "messages": args.messages, "rounds": args.rounds}
    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp, backends() as urls:
        env = {**_django_env(Path(tmp) / "var"), **urls}
        result = _child("measure", env, spec, "bench.admin_list")
    print(
        f"{args.channels:,} channels, {args.channels * args.messages:,} stored messages, "
        f"written in {result['build_seconds']:.1f} s; PostgreSQL"
    )
    print(f"{'view':<14} {'median ms':>9} {'p95 ms':>7} {'queries':>7}  rows")
    for name, figures in result["views"].items():
        print(
            f"{name:<14} {figures['median_ms']:>9.1f} {figures['p95_ms']:>7.1f} "
            f"{figures['queries']:>7}  {figures['listed']}"
        )


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench admin_list")
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=10, help="stored per channel")
    parser.add_argument("--rounds", type=int, default=30, help="renders per view")
    return parser.parse_args(argv)


def phase_measure(spec: dict) -> dict:
    _django()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # DEBUG off: the manifest
    started = time.perf_counter()
    _build(spec["channels"], spec["messages"])
    build_seconds = time.perf_counter() - started
    admin = User.objects.create_superuser("admin", "admin@example.test", "bench-password-1")
    last_page = {"p": str(math.ceil(spec["channels"] / PER_PAGE))}
    views = {
        name: _measure(admin, params, spec["rounds"])
        for name, params in {**VIEWS, "last page": last_page}.items()
    }
    return {"build_seconds": build_seconds, "views": views}


def _build(channels: int, messages: int) -> None:
    from django.utils import timezone

    from mailboxes.models import InboundMessage, Mailbox

    statuses = ["ok"] * 18 + ["error", "warning"]
    mailboxes = Mailbox.objects.bulk_create(
        Mailbox(
            name=f"Support {n}",
            email_address=f"support{n}@example.test",
            protocol=("imap", "pop3")[n % 2],
            incoming_host="mail.example.test",
            username=f"support{n}",
            password=f"secret-{n}",
            smtp_host="mail.example.test",
            status=statuses[n % len(statuses)],
            last_checked_at=timezone.now(),
        )
        for n in range(channels)
    )
    now = timezone.now()
    rows = (
        InboundMessage(
            mailbox=mailbox,
            protocol=mailbox.protocol,
            uidvalidity=1,
            uid=k + 1,
            size=2048,
            sha256=f"{mailbox.pk:032x}{k:032x}",
            raw=b"",
            subject=f"Order {k}",
            outcome=("processed", "processed", "processed", "failed")[k % 4],
            processed_at=now - timedelta(minutes=k),
        )
        for mailbox in mailboxes
        for k in range(messages)
    )
    batch: list = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            InboundMessage.objects.bulk_create(batch)
            batch = []
    InboundMessage.objects.bulk_create(batch)


def _measure(admin, params: dict, rounds: int) -> dict:
    return page_timings(admin, PATH, params, rounds, b'<tr><td class="action-checkbox">')


if __name__ == "__main__":
    phase, spec = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(globals()[f"phase_{phase}"](spec)))
