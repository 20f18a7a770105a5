"""Cases: the pipeline turning a 10,000-message mailbox into cases, beside the ingest baseline.

`python -m bench cases` (options after the name: `--n 2000`, `--replies 0.3`).
Generated mail (bench/ingest.py's bodies: plain, HTML, 5 % with attachments) from a few thousand
customers, 30 % of it replies into existing threads (the customer answering their own earlier
mail, with In-Reply-To and References as clients write them), is delivered into a private
Dovecot. Three phases then run, each in a process of its own with its peak RSS (bench/ingest.py's
helpers): the bare imapclient fetch-and-parse loop (the ingest baseline); Postroom's poll with
the pipeline switched off (store first only); and the pipeline over every stored message in
arrival order (parse, filter, thread, case, acknowledgement), which is what "cases per second"
measures. The channel acknowledges new cases, as most do. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formataddr
from pathlib import Path

from bench.ingest import (
    NAMES,
    SUBJECTS,
    _alternative,
    _child,
    _django_env,
    _encoded,
    _mixed,
    _plain,
    _spec,
    _warm,
    phase_baseline,  # noqa: F401 - a phase this module's children run
    phase_setup,  # noqa: F401 - a phase this module's children run
)

CUSTOMERS = 3000
# Fewer files than bench/ingest.py's 22 %: storing attachments is measured there, and cases are
# about threading; a few still go through the attachment step.
ATTACHMENTS = 0.05
ACK = (
    "Hello {{ contact.name|default:'there' }}, we have your message: case [#{{ case.reference }}]."
)


def generate(n: int, replies: float, seed: int = 1) -> Iterator[bytes]:
    """N messages; a share `replies` of them answer an earlier message of the same customer."""
    rng = random.Random(seed)
    blob = base64.encodebytes(rng.randbytes(600 * 1024)).replace(b"\n", b"\r\n")
    sent: list[tuple[str, str, str, list[str]]] = []  # (sender, Message-ID, subject, References)
    for i in range(n):
        msgid = f"<cases-{i}-{rng.getrandbits(32):08x}@example.org>"
        headers = []
        if sent and rng.random() < replies:
            sender, parent, subject, refs = rng.choice(sent[-2000:])
            refs = [*refs, parent][-10:]
            subject = "Re: " + subject.removeprefix("Re: ")
            headers = [f"In-Reply-To: {parent}", "References: " + "\r\n ".join(refs)]
        else:
            sender = f"customer{rng.randrange(CUSTOMERS)}@example.org"
            subject, refs = f"{rng.choice(SUBJECTS)} #{i}", []
        sent.append((sender, msgid, subject, refs))
        date = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
        head = [
            "From: " + formataddr((rng.choice(NAMES), sender)),
            "To: Support <support@example.test>",
            "Subject: " + _encoded(subject),
            f"Date: {format_datetime(date)}",
            f"Message-ID: {msgid}",
            "MIME-Version: 1.0",
            *headers,
        ]
        roll = rng.random()
        if roll < ATTACHMENTS:
            body = _mixed(rng, blob)
        else:
            body = _alternative(rng) if roll < 0.4 else _plain(rng)
        yield ("\r\n".join(head) + "\r\n").encode() + body


# --- The parent ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    from tests.servers.dovecot import start_dovecot  # pytest is a test extra: imported only here

    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        (Path(tmp) / "dovecot").mkdir()
        server = start_dovecot(Path(tmp) / "dovecot")
        try:
            user = server.add_user()
            spec = _spec(server, [user])
            env = _django_env(Path(tmp) / "var")
            _child("setup", env, spec, module="bench.cases")
            delivered = 0
            for raw in generate(args.n, args.replies):
                server.deliver(user, raw)
                delivered += len(raw)
            _warm(server, user)
            base = _child("baseline", env, spec, module="bench.cases")
            store = _child("store", env, spec, module="bench.cases")
            cases = _child("cases", env, spec, module="bench.cases")
        finally:
            server.close()
    _print(args, delivered, base, store, cases)
    print("load average      {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))
    print(f"total run time    {time.perf_counter() - started:.0f} s")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench cases")
    parser.add_argument("--n", type=int, default=10000, help="messages")
    parser.add_argument("--replies", type=float, default=0.3, help="share of replies")
    return parser.parse_args(argv)


def _print(args, delivered: int, base: dict, store: dict, cases: dict) -> None:
    n = args.n
    both = 1 / (1 / store["rate"] + 1 / cases["rate"])
    print(f"N = {n}: {delivered / 1e6:.1f} MB, {args.replies:.0%} replies into earlier threads")
    rows = [
        ("ingest baseline", base, "bare imapclient fetch + parse, no database"),
        ("store only", store, "Postroom's poll, pipeline off"),
        ("pipeline", cases, "parse, filter, thread, case, acknowledgement"),
    ]
    for label, r, what in rows:
        print(
            f"  {label:16}{r['rate']:7.0f} messages/s  {r['seconds']:6.1f} s  "
            f"peak RSS {r['peak_mb']:5.0f} MB  ({what})"
        )
    print(f"  store + pipeline{both:7.0f} messages/s  (one worker doing both, as a poll does)")
    opened = cases["cases"] / cases["seconds"]
    print(
        f"  cases           {cases['cases']} opened ({opened:.0f}/s), {cases['joined']} messages "
        f"joined an existing case, {cases['acks']} acknowledgements"
    )
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(cases["outcomes"].items()))
    print(f"  outcomes        {outcomes}")
    print()


# --- The children ----------------------------------------------------------------------------


def _django() -> None:
    import django

    django.setup()


def phase_store(spec: dict) -> dict:
    """Postroom's poll with the pipeline switched off: what storing alone costs."""
    _django()
    from django.db.models import Sum

    import pollers.services
    from mailboxes.models import InboundMessage, Mailbox

    pollers.services.rows_process = lambda rows: None
    mailbox = Mailbox.objects.get()
    stored, started = 0, time.perf_counter()
    while True:
        result = pollers.services.mailbox_poll(mailbox_id=mailbox.pk)
        if result.error:
            raise RuntimeError(f"poll failed: {result.error}")
        stored += result.stored
        if not (result.stored or result.again):
            break
    seconds = time.perf_counter() - started
    total = InboundMessage.objects.aggregate(total=Sum("size"))["total"] or 0
    return {"messages": stored, "bytes": total, "seconds": seconds}


def phase_cases(spec: dict) -> dict:
    """The pipeline over every stored message, in arrival order, in batches as a poll runs it."""
    _django()
    from django.db.models import Count

    from cases.models import Case, CaseMessage
    from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
    from pollers.services import rows_process

    Mailbox.objects.update(auto_ack_template=ACK)
    ids = list(
        InboundMessage.objects.filter(outcome=InboundMessage.Outcome.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    started = time.perf_counter()
    for k in range(0, len(ids), 200):
        rows_process([InboundMessage(pk=pk) for pk in ids[k : k + 200]])
    seconds = time.perf_counter() - started
    outcomes = InboundMessage.objects.values_list("outcome").annotate(Count("pk")).order_by()
    joined = CaseMessage.objects.filter(direction="in").exclude(joined_by="new").count()
    return {
        "messages": len(ids),
        "seconds": seconds,
        "cases": Case.objects.count(),
        "joined": joined,
        "acks": OutboundMessage.objects.count(),
        "outcomes": dict(outcomes),
    }


def _child_main(phase: str, spec: dict) -> None:
    result = globals()[f"phase_{phase}"](spec)
    result["rate"] = result.get("messages", 1) / result["seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1], json.loads(sys.argv[2]))
