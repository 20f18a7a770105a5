"""Outbox: Postroom sending 2,000 replies through one channel, beside a bare aiosmtplib loop.

`python -m bench outbox` (options after the name: `--n 5000`).
The SMTP fixture (tests/servers/smtp.py, STARTTLS and AUTH as a real submission port) runs in
this process; the senders run in a child process with a fresh SQLite database, so the server
and the client never share a GIL. The child composes and enqueues the replies (timed apart),
then sends the very same bytes twice: once with aiosmtplib over one connection (the baseline),
once with `outbox_send_due`, the service the Celery task calls (claims, one session per run,
each outcome committed, no broker), in alternating rounds. Figures are printed beside their
target, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import _django_env

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.5
USER, PASSWORD = "support@example.test", "bench-password"
ROUNDS = 3
ATTACHMENT_EVERY = 20  # one reply in 20 carries a 20 kB PDF
WORDS = [
    "thank",
    "you",
    "for",
    "your",
    "patience",
    "we",
    "have",
    "sent",
    "a",
    "replacement",
    "kettle",
    "today",
]


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    from tests.servers.smtp import SmtpTestServer  # pytest is a test extra: imported only here
    from tests.servers.tls import make_self_signed

    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        server = SmtpTestServer(make_self_signed(Path(tmp)), idle_timeout=300)
        server.start()
        try:
            server.add_user(USER, PASSWORD)
            spec = {"n": args.n, "port": server.starttls_port, "cert": str(server.cert_path)}
            result = _child(spec, _django_env(Path(tmp) / "var"))
            received, sessions = len(server.messages), server.connections_opened
        finally:
            server.stop()
    _print(args.n, result, received, sessions)
    print("load average      {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench outbox")
    parser.add_argument("--n", type=int, default=2000, help="messages")
    return parser.parse_args(argv)


def _child(spec: dict, env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "bench.outbox", json.dumps(spec)]
    out = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
    return json.loads(out.splitlines()[-1])


def _print(n: int, r: dict, received: int, sessions: int) -> None:
    base, post = n / r["baseline_seconds"], n / r["postroom_seconds"]
    ratio = post / base
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    rounds = ", ".join(
        f"{a:.2f}/{b:.2f}" for a, b in zip(r["baseline_rounds"], r["postroom_rounds"], strict=True)
    )
    print(f"N = {n} replies, {r['bytes'] / 1e6:.1f} MB ({r['bytes'] / n / 1e3:.1f} kB average)")
    print(f"  enqueue         {n / r['enqueue_seconds']:8.0f} msg/s  (compose + outbox row)")
    print(f"  baseline        {base:8.0f} msg/s  {r['baseline_seconds']:6.2f} s  (aiosmtplib)")
    print(f"  postroom        {post:8.0f} msg/s  {r['postroom_seconds']:6.2f} s  ", end="")
    print(f"({r['sent']} sent in {r['runs']} run(s))")
    print(f"  ratio           {ratio:8.2f}   target >= {TARGET_RATIO}: {met}")
    print(f"  rounds          baseline/postroom seconds: {rounds} (best of each above)")
    print(f"  server          {received} messages in {sessions} SMTP sessions ", end="")
    print(f"(expected {2 * ROUNDS * n} in {2 * ROUNDS})")


# --- The child: one Django process ------------------------------------------------------------


def _child_main(spec: dict) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    mailbox = _channel(spec)
    started = time.perf_counter()
    raws = _enqueue(mailbox, spec["n"])
    enqueue_seconds = time.perf_counter() - started
    # Alternate, ROUNDS each, and keep each side's best: the first round of either pays for
    # warming up (imports, TLS, the server's and the ORM's caches), and a busy machine varies.
    baselines, postrooms = [], []
    for round_ in range(ROUNDS):
        baselines.append(asyncio.run(_baseline(spec, raws)))
        postrooms.append(_postroom(mailbox.pk, requeue=round_ > 0))
    best = min(postrooms, key=lambda r: r["postroom_seconds"])
    result = {
        "enqueue_seconds": enqueue_seconds,
        "baseline_seconds": min(baselines),
        "baseline_rounds": baselines,
        "postroom_rounds": [r["postroom_seconds"] for r in postrooms],
        "bytes": sum(len(raw) for raw in raws),
        **best,
    }
    print(json.dumps(result))


def _channel(spec: dict):
    from mailboxes.models import Mailbox

    return Mailbox.objects.create(
        name="Bench outbox",
        email_address=USER,
        from_name="Support team",
        reply_to="help@example.test",
        listen=False,  # outbound only: no copy to Sent, sending alone is measured
        smtp_host="127.0.0.1",
        smtp_port=spec["port"],
        smtp_security="starttls",
        smtp_username=USER,
        smtp_password=PASSWORD,
        trust_self_signed=True,
        case_response_template="Hello {{ contact }},\n\n{{ reply }}\n\n-- {{ channel.from_name }}",
    )


def _enqueue(mailbox, n: int) -> list[bytes]:
    from django.db import transaction

    from mailboxes.compose import Draft, OutgoingAttachment
    from mailboxes.outbox import outbound_enqueue
    from mailboxes.signals import send_requested

    # No Celery task per commit: the bench calls the service those tasks call, below.
    send_requested.disconnect(dispatch_uid="pollers.enqueue_send")
    raws = []
    pdf = b"%PDF-1.4\n" + os.urandom(20_000)
    for i in range(n):
        text = "\n\n".join(" ".join(WORDS[(i + p) % 5 :]) for p in range(8))
        draft = Draft(
            to=[f"customer{i}@example.org"],
            subject=f"Re: Order {i}",
            text=text,
            case_reference=str(1000 + i),
            in_reply_to=f"<question-{i}@example.org>",
            references=[f"<first-{i}@example.org>"],
            attachments=[OutgoingAttachment("invoice.pdf", pdf)]
            if i % ATTACHMENT_EVERY == 0
            else [],
            template_context={"contact": f"Customer {i}"},
        )
        with transaction.atomic():
            row = outbound_enqueue(mailbox=mailbox, draft=draft)
        raws.append(bytes(row.raw))
    return raws


async def _baseline(spec: dict, raws: list[bytes]) -> float:
    import ssl

    import aiosmtplib

    context = ssl.create_default_context(cafile=spec["cert"])
    started = time.perf_counter()
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=spec["port"], start_tls=True, tls_context=context
    )
    await client.connect()
    await client.login(USER, PASSWORD)
    for i, raw in enumerate(raws):
        await client.sendmail(USER, [f"customer{i}@example.org"], raw)
    await client.quit()
    return time.perf_counter() - started


def _postroom(mailbox_id: int, *, requeue: bool) -> dict:
    from mailboxes.models import OutboundMessage
    from pollers.outbox import outbox_send_due

    rows = OutboundMessage.objects.filter(mailbox_id=mailbox_id)
    if requeue:  # the same rows again, as if never sent
        rows.update(state="queued", attempts=0, sent_at=None, server_reply="")
    sent = runs = 0
    started = time.perf_counter()
    while rows.filter(state="queued").exists():
        sent += outbox_send_due(mailbox_id=mailbox_id).sent
        runs += 1
    seconds = time.perf_counter() - started
    return {"postroom_seconds": seconds, "sent": sent, "runs": runs}


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
