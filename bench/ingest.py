"""Ingest: Postroom's poll of a Dovecot folder into the database, beside a bare imapclient loop.

`python -m bench ingest` (options after the name: `--n 500`, `--n 1000 10000`, `--channels 0`).
Generated mail is delivered straight into a private Dovecot's Maildir (tests/servers/dovecot.py),
then read twice: by imapclient + email.message_from_bytes with no database (the baseline), and by
`mailbox_poll` into a fresh SQLite database with processing. A last run polls many idle channels.

Each measured phase runs in a process of its own and its peak RSS is that child's ru_maxrss
(os.wait4), so one N does not inflate the next. Figures are printed beside their targets, never
asserted.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import json
import os
import random
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from urllib.parse import quote

from bench.parse import _walk_message

ROOT = Path(__file__).resolve().parents[1]
CRLF = b"\r\n"
# Batch sizing as the poller does it (providers.imap_folder): 200 messages or 4 MB per FETCH.
BATCH_COUNT, BATCH_BYTES = 200, 4 * 2**20
MALFORMED_EVERY = 97  # ~1% of the mail is broken in one of the ways below
TARGET_RATIO, TARGET_PEAK_MB, TARGET_GROWTH = 0.5, 250, 0.10

WORDS = [
    *["order", "delivery", "parcel", "invoice", "refund", "account", "password", "login"],
    *["payment", "card", "address", "please", "thanks", "urgent", "still", "waiting"],
    *["since", "monday", "tracking", "number", "damaged", "box", "replace", "the", "a"],
    *["my", "your", "we", "you", "it", "is", "was", "not", "have", "has", "been", "and"],
    *["or", "but", "when", "where", "why", "how", "today"],
]
SUBJECTS = [
    "Where is my order",
    "Invoice question",
    "Cannot log in",
    "Refund request",
    "Parcel arrived damaged",
    "Change of address",
]
SUBJECTS_INTL = [
    "Bestellung für Herrn Müller",
    "Commande reçue — merci ✓",
    "Заказ № 4521 не пришёл",
    "注文の確認について",
    "Ødelagt vare, ærlig talt",
]
NAMES = ["Carol Customer", "Dan Buyer", "Erin Shopper", "Frank Client"]
NAMES_INTL = ["José Álvarez", "Zoë Löwe", "Łukasz Żółkiewski", "王小明", "Ørjan Bækken"]
ATTACHMENT_TYPES = [
    ("application/pdf", "invoice.pdf"),
    ("image/jpeg", "photo.jpg"),
    ("image/png", "screenshot.png"),
    ("application/zip", "logs.zip"),
    ("application/pdf", "Rechnung März.pdf"),
]


# --- The mail ---------------------------------------------------------------------------------


def generate(n: int, seed: int = 1) -> Iterator[bytes]:
    """N messages: mostly small text and HTML, ~22% with attachments, threads, ~1% malformed."""
    rng = random.Random(seed)
    # Attachments are runs of lines of one encoded blob: incompressible, and no per-message
    # base64 work (57 bytes per 76-character line, so every run is valid base64 by itself).
    blob = base64.encodebytes(rng.randbytes(600 * 1024)).replace(b"\n", CRLF)
    history: list[tuple[str, str, list[str]]] = []  # (Message-ID, subject, References)
    for i in range(n):
        if i % MALFORMED_EVERY == MALFORMED_EVERY // 2:
            yield MALFORMED[(i // MALFORMED_EVERY) % len(MALFORMED)](i)
            continue
        head, subject, msgid, refs = _headers(rng, i, history)
        history.append((msgid, subject, refs))
        roll = rng.random()
        if roll < 0.22:
            body = _mixed(rng, blob)
        elif roll < 0.47:
            body = _alternative(rng)
        else:
            body = _plain(rng)
        yield head + body


def _headers(rng: random.Random, i: int, history: list) -> tuple[bytes, str, str, list[str]]:
    intl = rng.random() < 0.25
    subject = f"{rng.choice(SUBJECTS_INTL if intl else SUBJECTS)} #{i}"
    name = rng.choice(NAMES_INTL if rng.random() < 0.25 else NAMES)
    msgid = f"<bench-{i}-{rng.getrandbits(32):08x}@example.org>"
    refs: list[str] = []
    lines = []
    if history and rng.random() < 0.3:
        # A reply into a recent thread (RFC 5322 3.6.4): References carries the chain.
        parent_id, parent_subject, parent_refs = rng.choice(history[-200:])
        refs = [*parent_refs, parent_id][-10:]
        subject = "Re: " + parent_subject.removeprefix("Re: ")
        lines += [f"In-Reply-To: {parent_id}", "References: " + "\r\n ".join(refs)]
    date = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    lines = [
        "From: " + formataddr((name, f"customer{i % 500}@example.org"), charset="utf-8"),
        "To: Support <support@example.test>",
        "Subject: " + _encoded(subject),
        f"Date: {format_datetime(date)}",
        f"Message-ID: {msgid}",
        "MIME-Version: 1.0",
        *lines,
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii"), subject, msgid, refs


def _encoded(text: str) -> str:
    """RFC 2047 encoded-words for a non-ASCII header; ASCII stays as it is."""
    if text.isascii():
        return text
    return Header(text, "utf-8", header_name="Subject").encode(linesep="\r\n")


def _text(rng: random.Random, words: int) -> str:
    chosen = rng.choices(WORDS, k=words)
    return "\r\n".join(" ".join(chosen[k : k + 12]) for k in range(0, words, 12)) + "\r\n"


def _plain(rng: random.Random) -> bytes:
    return (
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + _text(rng, rng.randint(40, 600)).encode()
    )


def _alternative(rng: random.Random) -> bytes:
    text = _text(rng, rng.randint(80, 900))
    html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
    return _multipart(
        rng,
        "alternative",
        [
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode(),
            b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode(),
        ],
    )


def _mixed(rng: random.Random, blob: bytes) -> bytes:
    parts = [_alternative(rng) if rng.random() < 0.4 else _plain(rng)]
    for _ in range(rng.choices([1, 2, 3], weights=[70, 25, 5])[0]):
        size = rng.randint(10, 100) if rng.random() < 0.7 else rng.randint(100, 500)
        lines = size * 1024 // 57
        start = rng.randrange(len(blob) // 78 - lines) * 78
        parts.append(_attachment(rng, blob[start : start + lines * 78]))
    return _multipart(rng, "mixed", parts)


def _attachment(rng: random.Random, encoded: bytes) -> bytes:
    ctype, filename = rng.choice(ATTACHMENT_TYPES)
    # RFC 2231 for a non-ASCII file name, as mail clients write it.
    param = f'filename="{filename}"'
    if not filename.isascii():
        param = "filename*=utf-8''" + quote(filename)
    head = (
        f"Content-Type: {ctype}\r\nContent-Disposition: attachment; {param}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode() + encoded


def _multipart(rng: random.Random, subtype: str, parts: list[bytes]) -> bytes:
    boundary = f"=_{subtype}_{rng.getrandbits(64):016x}".encode()
    head = b'Content-Type: multipart/%s; boundary="%s"\r\n\r\n' % (subtype.encode(), boundary)
    body = b"".join(b"--%s\r\n%s\r\n" % (boundary, part) for part in parts)
    return head + body + b"--%s--\r\n" % boundary


def _no_blank_line(i: int) -> bytes:
    head = f"From: a@example.org\r\nSubject: broken {i}\r\n"
    return (head + "Hello, this line is not a header\r\n").encode()


def _lost_boundary(i: int) -> bytes:
    return (
        f"From: b@example.org\r\nSubject: lost boundary {i}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="never-used"\r\n\r\n'
        "--other\r\nContent-Type: text/plain\r\n\r\ntext without its closing line\r\n"
    ).encode()


def _bad_base64(i: int) -> bytes:
    return (
        f"From: c@example.org\r\nSubject: bad base64 {i}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "JVBERi0xLjQK!!!!not*base64***\r\n=====\r\n"
    ).encode()


def _bad_headers(i: int) -> bytes:
    return (
        f"From: =?x-unknown?b?SGVsbG8=?= <d@example.org>\r\nSubject: Grüße raw 8-bit {i} "
        "=?utf-8?q?broken\r\nDate: yesterday-ish\r\nMessage-ID: <no closing bracket\r\n"
        f"X-Long: {'x' * 2000}\r\nContent-Type: multipart/mixed\r\n\r\nno boundary given\r\n"
    ).encode()


def _empty(i: int) -> bytes:
    return CRLF


MALFORMED = [_no_blank_line, _lost_boundary, _bad_base64, _bad_headers, _empty]


# --- The parent: Dovecot, delivery, one child process per phase -------------------------------


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    from tests.servers.dovecot import start_dovecot  # pytest is a test extra: imported only here

    # Figures from a busy machine mislead: say how busy it was.
    print("load average      {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg()))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        (Path(tmp) / "dovecot").mkdir()
        server = start_dovecot(Path(tmp) / "dovecot")
        try:
            results = [_folder_run(server, n, Path(tmp), args.seed) for n in args.n]
            _memory_targets(results)
            if args.channels:
                _idle_run(server, args.channels, Path(tmp))
        finally:
            server.close()
    print("load average      {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg()))
    print(f"total run time    {time.perf_counter() - started:.0f} s")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench ingest")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="messages")
    parser.add_argument("--channels", type=int, default=1000, help="idle channels (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def _folder_run(server, n: int, tmp: Path, seed: int) -> dict:
    user = server.add_user()
    spec = _spec(server, [user])
    env = _django_env(tmp / f"var-{n}")
    _child("setup", env, spec)  # a new channel starts "from now on": its cursor comes first
    delivered, started = 0, time.perf_counter()
    for raw in generate(n, seed):
        server.deliver(user, raw)
        delivered += len(raw)
    delivery = time.perf_counter() - started
    _warm(server, user)
    base = _child("baseline", env, spec)
    post = _child("postroom", env, spec)
    _print_folder(n, delivered, delivery, base, post)
    return {"n": n, "base": base, "post": post}


def _warm(server, user) -> None:
    """Let Dovecot index the new mail and learn its sizes once, so neither reader pays for it."""
    with server.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        _sizes(client, sorted(client.search("ALL")), ["RFC822.SIZE", "INTERNALDATE"])


def _idle_run(server, count: int, tmp: Path) -> None:
    users = [server.add_user() for _ in range(count)]
    spec = _spec(server, users)
    env = _django_env(tmp / "var-idle")
    first = _child("setup", env, spec)
    base = _child("idle_baseline", env, spec)
    post = _child("idle", env, spec)
    ratio = post["rate"] / base["rate"]
    print(f"idle channels     {count} (no new mail, cursors set)")
    print(f"  first polls     {count / first['seconds']:7.1f} polls/s (setting the cursors)")
    print(f"  baseline        {base['rate']:7.1f} polls/s   peak RSS {base['peak_mb']:5.0f} MB")
    print(f"  postroom        {post['rate']:7.1f} polls/s   peak RSS {post['peak_mb']:5.0f} MB")
    print(f"  ratio           {ratio:7.2f}   errors {post['errors']}, stored {post['stored']}")
    print()


def _spec(server, users) -> dict:
    return {
        "host": server.host,
        "port": server.ports.imaps,
        "users": [[u.name, u.password] for u in users],
    }


def _django_env(var: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    # Production-like: DEBUG off (so Django keeps no query log), loopback allowed for Dovecot.
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "channels_app.settings",
        "POSTROOM_VAR_DIR": str(var),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "POSTROOM_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "POSTROOM_BLOCKED_NETWORKS": "169.254.0.0/16",
        "DATABASE_URL": f"sqlite:///{var / 'postroom.sqlite3'}",
        "LOG_LEVEL": "WARNING",
    }


def _child(phase: str, env: dict[str, str], spec: dict, module: str = "bench.ingest") -> dict:
    """Run one phase in a fresh interpreter; its JSON line, plus its own peak RSS."""
    command = [sys.executable, "-m", module, phase, json.dumps(spec)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE)
    out = process.stdout.read()
    process.stdout.close()
    # wait4 gives this child's rusage alone; RUSAGE_CHILDREN would be the max over all so far.
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"bench phase {phase} exited with {process.returncode}")
    return {**json.loads(out.splitlines()[-1]), "peak_mb": usage.ru_maxrss / 1024}


def _print_folder(n: int, delivered: int, delivery: float, base: dict, post: dict) -> None:
    ratio = post["rate"] / base["rate"]
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(post["outcomes"].items()))
    size = f"{delivered / 1e6:.1f} MB ({delivered / n / 1e3:.0f} kB average)"
    print(f"N = {n}: {size} delivered in {delivery:.1f} s")
    for label, r in (("baseline", base), ("postroom", post)):
        mb_s = r["bytes"] / 1e6 / r["seconds"]
        print(
            f"  {label}        {r['rate']:7.0f} messages/s  {mb_s:6.1f} MB/s  "
            f"{r['seconds']:6.1f} s  peak RSS {r['peak_mb']:5.0f} MB  ({r['messages']} messages)"
        )
    print(
        f"  ratio           {ratio:7.2f}   target >= {TARGET_RATIO}: {_met(ratio >= TARGET_RATIO)}"
    )
    print(f"  outcomes        postroom {outcomes} in {post['polls']} polls; ", end="")
    print(f"baseline could not parse {base['broken']}")
    print()


def _memory_targets(results: list[dict]) -> None:
    if not results:
        return
    low, high = min(results, key=lambda r: r["n"]), max(results, key=lambda r: r["n"])
    peak = high["post"]["peak_mb"]
    print(f"memory            postroom peak RSS {peak:.0f} MB at N={high['n']}: ", end="")
    print(f"target < {TARGET_PEAK_MB} MB: {_met(peak < TARGET_PEAK_MB)}")
    if low is not high:
        growth = peak / low["post"]["peak_mb"] - 1
        print(
            f"                  {growth:+.1%} over N={low['n']}: "
            f"target within {TARGET_GROWTH:.0%}: {_met(abs(growth) <= TARGET_GROWTH)}"
        )
    print()


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


# --- The children -----------------------------------------------------------------------------


def _tls() -> ssl.SSLContext:
    # As Postroom connects with trust_self_signed: encrypted, not verified.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _connect(spec: dict, name: str, password: str):
    from imapclient import IMAPClient

    client = IMAPClient(spec["host"], port=spec["port"], ssl=True, ssl_context=_tls(), timeout=30)
    client.login(name, password)
    return client


def phase_baseline(spec: dict) -> dict:
    """A bare loop: sizes, then UID FETCH BODY.PEEK[] in batches, parse and walk every part."""
    name, password = spec["users"][0]
    count = total = broken = 0
    started = time.perf_counter()
    client = _connect(spec, name, password)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search("ALL"))
    sizes = _sizes(client, uids, ["RFC822.SIZE"])
    for batch in _batches(uids, sizes):
        for data in client.fetch(batch, ["BODY.PEEK[]"]).values():
            raw = data[b"BODY[]"]
            count, total = count + 1, total + len(raw)
            try:
                _walk_message(email.message_from_bytes(raw, policy=email.policy.default))
            except Exception:  # noqa: BLE001 - counted, as Postroom records a failure
                broken += 1
    client.logout()
    seconds = time.perf_counter() - started
    return {"messages": count, "bytes": total, "broken": broken, "seconds": seconds}


def _sizes(client, uids: list[int], items: list[str]) -> dict[int, int]:
    sizes = {}
    for k in range(0, len(uids), 500):  # 500 UIDs keep the command line short
        fetched = client.fetch(uids[k : k + 500], items)
        sizes.update((uid, data[b"RFC822.SIZE"]) for uid, data in fetched.items())
    return sizes


def _batches(uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    batch, total = [], 0
    for uid in uids:
        if batch and (total + sizes[uid] > BATCH_BYTES or len(batch) >= BATCH_COUNT):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += sizes[uid]
    if batch:
        yield batch


def _django() -> None:
    import django

    django.setup()


def phase_setup(spec: dict) -> dict:
    """Migrate a fresh database, create a channel per user and poll each once (the cursor)."""
    _django()
    from django.core.management import call_command

    from mailboxes.models import Mailbox
    from pollers.services import mailbox_poll

    call_command("migrate", verbosity=0)
    ids = [_channel(spec, name, password).pk for name, password in spec["users"]]
    started = time.perf_counter()
    for pk in ids:
        mailbox_poll(mailbox_id=pk)
    seconds = time.perf_counter() - started
    missing = Mailbox.objects.filter(cursor_set_at__isnull=True).count()
    if missing:
        raise RuntimeError(f"{missing} channel(s) did not set a cursor")
    return {"seconds": seconds}


def _channel(spec: dict, name: str, password: str):
    mailbox = channel_unsaved(spec, name, password)
    mailbox.save()
    return mailbox


def channel_unsaved(spec: dict, name: str, password: str):
    """A bench channel on the Dovecot account `name`, not saved yet (callers may bulk-create)."""
    from mailboxes.models import Mailbox

    return Mailbox(
        name=f"Support {name}",
        email_address=f"{name}@example.test",
        protocol="imap",
        incoming_host=spec["host"],
        incoming_port=spec["port"],
        incoming_security="ssl",
        trust_self_signed=True,
        username=name,
        password=password,
        smtp_host="127.0.0.1",
        smtp_port=25,
    )


def phase_postroom(spec: dict) -> dict:
    """mailbox_poll until a poll stores nothing: store, cursor, process, all committed."""
    _django()
    from django.db.models import Count, Sum

    from mailboxes.models import InboundMessage, Mailbox
    from pollers.services import mailbox_poll

    pk = Mailbox.objects.get().pk
    stored = polls = 0
    started = time.perf_counter()
    while True:
        result = mailbox_poll(mailbox_id=pk)
        polls += 1
        if result.error:
            raise RuntimeError(f"poll failed: {result.error}")
        stored += result.stored
        if not (result.stored or result.again):
            break
    seconds = time.perf_counter() - started
    rows = InboundMessage.objects.all()
    outcomes = dict(rows.values_list("outcome").annotate(Count("pk")).order_by())
    total = rows.aggregate(total=Sum("size"))["total"] or 0
    return {
        "messages": stored,
        "bytes": total,
        "seconds": seconds,
        "polls": polls,
        "outcomes": outcomes,
    }


def phase_idle_baseline(spec: dict) -> dict:
    """What a poll of an idle folder costs on the wire: connect, log in, examine, search."""
    started = time.perf_counter()
    for name, password in spec["users"]:
        client = _connect(spec, name, password)
        client.select_folder("INBOX", readonly=True)
        client.search(["UID", "1:*"])
        client.logout()
    return {"seconds": time.perf_counter() - started}


def phase_idle(spec: dict) -> dict:
    _django()
    from mailboxes.models import Mailbox
    from pollers.services import mailbox_poll

    ids = list(Mailbox.objects.order_by("pk").values_list("pk", flat=True))
    errors = stored = 0
    started = time.perf_counter()
    for pk in ids:
        result = mailbox_poll(mailbox_id=pk)
        errors += bool(result.error)
        stored += result.stored
    return {"seconds": time.perf_counter() - started, "errors": errors, "stored": stored}


def _child_main(phase: str, spec: dict) -> None:
    result = globals()[f"phase_{phase}"](spec)
    count = result.get("messages", len(spec["users"]))
    result["rate"] = count / result["seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1], json.loads(sys.argv[2]))
