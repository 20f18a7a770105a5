"""The agent's case list: render time and query count with 1,000 and 100,000 cases.

`python -m bench case_list` (options after the name: `--sizes 1000 100000 --rounds 30
--databases sqlite postgresql`). Each size runs in a process of its own on a fresh database
(bench/ingest.py's environment: DEBUG off): SQLite, and a throwaway PostgreSQL
(tests/servers/postgres.py) as the admin_list bench starts it. The rows (contacts, cases
across two channels, one message each, a quarter of them assigned) are written with
bulk_create; an agent of one channel then loads /cases/ through Django's test client, signed
in, over several rounds: the first page, a status filter, "mine", a later page, and a search.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.ingest import _child, _django, _django_env
from bench.pages import page_timings
from bench.polling_scale import backends

VIEWS = {
    "first page": {},
    "status filter": {"state": "open"},
    "mine": {"assignee": "mine"},
    "page 10": {"page": "10"},
    "search": {"q": "descaling"},
}
BATCH = 5000


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    print("load average {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    print(f"{'cases':>8}  {'view':<14} {'median ms':>9} {'p95 ms':>7} {'queries':>7}  listed")
    for database in args.databases:
        print(database)
        for size in args.sizes:
            result = _run(database, {"size": size, "rounds": args.rounds})
            print(f"{size:>8,}  rows written in {result['build_seconds']:.1f} s")
            for name, figures in result["views"].items():
                print(
                    f"{size:>8,}  {name:<14} {figures['median_ms']:>9.1f} "
                    f"{figures['p95_ms']:>7.1f} {figures['queries']:>7}  {figures['listed']}"
                )
    print("load average {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))


def _run(database: str, spec: dict) -> dict:
    """One size on a fresh database of its own, in a child process."""
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        env = _django_env(Path(tmp) / "var")
        if database == "sqlite":
            return _child("measure", env, spec, "bench.case_list")
        with backends() as urls:
            return _child("measure", {**env, **urls}, spec, "bench.case_list")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench case_list")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument(
        "--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--rounds", type=int, default=30, help="renders per view")
    return parser.parse_args(argv)


def phase_measure(spec: dict) -> dict:
    _django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # DEBUG off: the manifest
    started = time.perf_counter()
    agent = _build(spec["size"])
    build_seconds = time.perf_counter() - started
    _analyze()
    views = {name: _measure(agent, params, spec["rounds"]) for name, params in VIEWS.items()}
    return {"build_seconds": build_seconds, "views": views}


def _build(size: int):
    from django.contrib.auth.models import Group, User

    from cases.models import Case, CaseMessage, Contact
    from mailboxes.models import Mailbox

    group = Group.objects.create(name="Support")
    agent = User.objects.create_user("agent", "agent@example.test", "bench-password-1")
    agent.groups.add(group)
    channels = [
        Mailbox.objects.create(name=f"Bench {n}", email_address=f"bench{n}@example.test")
        for n in range(2)
    ]
    channels[0].agent_groups.add(group)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for first in range(0, size, BATCH):
        numbers = range(first, min(first + BATCH, size))
        contacts = Contact.objects.bulk_create(
            Contact(address=f"customer{n}@example.org", name=f"Customer {n}") for n in numbers
        )
        cases = Case.objects.bulk_create(
            Case(
                mailbox=channels[(n // 2) % 2],  # every status in both channels
                contact=contact,
                address=contact.address,
                subject=f"Order {n} has not arrived",
                state=("new", "open", "pending", "solved")[n % 4],
                assignee=agent if n % 4 == 1 else None,
                last_message_at=start + timedelta(minutes=n),
            )
            for n, contact in zip(numbers, contacts, strict=True)
        )
        CaseMessage.objects.bulk_create(
            CaseMessage(
                case=case,
                direction="in",
                date=case.last_message_at,
                joined_by="new",
                text=f"Hello, my order {n} is late."
                + (" I tried descaling." if n % 100 == 0 else ""),
            )
            for n, case in zip(numbers, cases, strict=True)
        )
    return agent


def _analyze() -> None:
    """Table statistics on PostgreSQL, as autovacuum gathers them soon after a load this size:
    without them the planner guesses, and the figures would be of a database nobody runs."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def _measure(agent, params: dict, rounds: int) -> dict:
    return page_timings(agent, "/cases/", params, rounds, b'class="case state-')


if __name__ == "__main__":
    phase, spec = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(globals()[f"phase_{phase}"](spec)))
