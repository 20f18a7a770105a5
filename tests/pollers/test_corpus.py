"""Real mail written by other software (shared/corpus, 1,371 files): every message a server hands
over is stored with the exact bytes the server returned, then processed or failed with a reason.

What Dovecot does to the files on the way, and what "exact" is therefore compared against:
bare LF line ends are served as CRLF (over IMAP and POP3 alike); CR-only files (sisimai
maildir/mac) are served with their bare CRs untouched; over IMAP a NUL byte is served as 0x80
(the Outlook .msg OLE file and three more), over POP3 it is served as is; over POP3 a message
without a final line end gains one before the terminating ".". No file is refused.
"""

from __future__ import annotations

import hashlib
import os
import poplib
from dataclasses import dataclass
from pathlib import Path

import pytest

import providers.pop3  # noqa: F401 - raises poplib's line limit, as the poller runs with it
from cases.models import Attachment, Case, CaseMessage, Contact
from cases.services import inbound_replay
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage

pytestmark = pytest.mark.django_db

CORPUS = Path(
    os.environ.get("POSTROOM_CORPUS")
    or Path(__file__).resolve().parents[3] / "shared" / "corpus" / "real"
)
# UIDs per BODY.PEEK[] command when comparing: a few hundred kB per round trip, not 1,371 trips.
COMPARE_CHUNK = 100
MAX_POLLS = 10


@dataclass(frozen=True)
class Corpus:
    paths: list[str]  # as MANIFEST.tsv names them
    messages: list[bytes]

    def __len__(self) -> int:
        return len(self.messages)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """The files MANIFEST.tsv lists, checked against its sizes and sha256 (line ends intact)."""
    manifest = next(
        (p for p in (CORPUS / "MANIFEST.tsv", CORPUS.parent / "MANIFEST.tsv") if p.is_file()),
        None,
    )
    if manifest is None:
        pytest.fail(f"no corpus MANIFEST.tsv in or above {CORPUS}: set POSTROOM_CORPUS")
    paths, messages = [], []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        name, size, sha256 = line.split("\t")
        raw = (manifest.parent / name).read_bytes()
        # A checkout that rewrote line ends would test something else than real mail.
        assert (len(raw), hashlib.sha256(raw).hexdigest()) == (int(size), sha256), name
        paths.append(name)
        messages.append(raw)
    return Corpus(paths, messages)


def deliver_all(dovecot, user, corpus: Corpus) -> None:
    for raw in corpus.messages:
        dovecot.deliver(user, raw)  # the file's bytes, as an MDA drops them in the Maildir


def poll_until_quiet(poll, mailbox: Mailbox) -> list:
    """Poll as the worker does until a poll finds nothing new; no poll may go red."""
    results = []
    while not results or results[-1].stored:
        assert len(results) < MAX_POLLS, f"still storing after {MAX_POLLS} polls"
        result = poll(mailbox)
        assert not result.error, result.error
        results.append(result)
    return results


def ledger(mailbox: Mailbox) -> list[InboundMessage]:
    return list(InboundMessage.objects.filter(mailbox=mailbox).order_by("pk"))


def described(row: InboundMessage) -> str:
    return f"{row.server_identity} ({row.subject[:60]!r})"


def assert_processed_or_failed_with_a_reason(rows: list[InboundMessage]) -> None:
    """Processed, or ignored, held or failed: whichever, the ledger says why."""
    unfinished = [
        described(row)
        for row in rows
        if row.outcome == InboundMessage.Outcome.PENDING or not row.outcome_reason.strip()
    ]
    assert not unfinished, unfinished
    # "Processing failed" is the pipeline's own bug, not bad mail: real mail must not cause it.
    crashed = [described(r) for r in rows if r.outcome_reason.startswith("Processing failed")]
    assert not crashed, crashed


def what_processing_made(mailbox: Mailbox) -> tuple:
    """Everything the pipeline writes, counted: a replay must not add to any of it."""
    return (
        Case.objects.filter(mailbox=mailbox).count(),
        CaseMessage.objects.filter(case__mailbox=mailbox).count(),
        Attachment.objects.filter(message__case__mailbox=mailbox).count(),
        Contact.objects.count(),
        OutboundMessage.objects.filter(mailbox=mailbox).count(),
    )


def imap_bodies(dovecot, user, uids: list[int]) -> dict[int, bytes]:
    """BODY.PEEK[] of each UID over one connection of our own, COMPARE_CHUNK per command."""
    bodies: dict[int, bytes] = {}
    with dovecot.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        for start in range(0, len(uids), COMPARE_CHUNK):
            fetched = client.fetch(uids[start : start + COMPARE_CHUNK], ["BODY.PEEK[]"])
            bodies.update((uid, data[b"BODY[]"]) for uid, data in fetched.items())
    return bodies


def pop3_bodies(dovecot, user) -> dict[str, bytes]:
    """RETR of every message by UIDL, over one POP3S connection of our own.

    poplib strips each line's CRLF and undoes dot-stuffing (RFC 1939 §3); the server sends
    CRLF line ends, so joining with CRLF gives back the message it holds.
    """
    client = poplib.POP3_SSL(dovecot.host, dovecot.ports.pop3s, context=dovecot.ssl_context())
    try:
        client.user(user.name)
        client.pass_(user.password)
        _response, listing, _octets = client.uidl()
        bodies = {}
        for entry in listing:
            number, uidl = entry.decode("ascii").split()
            _response, lines, _octets = client.retr(int(number))
            bodies[uidl] = b"\r\n".join(lines) + b"\r\n"
        client.quit()
    finally:
        client.close()
    return bodies


def test_every_corpus_message_is_stored_over_imap_as_the_server_returns_it(
    dovecot, connected, poll, corpus
):
    user = dovecot.add_user()
    mailbox = connected(user)
    deliver_all(dovecot, user, corpus)

    poll_until_quiet(poll, mailbox)

    rows = ledger(mailbox)
    assert len(rows) == len(corpus)
    assert len({row.uid for row in rows}) == len(rows)
    server = imap_bodies(dovecot, user, [row.uid for row in rows])
    differ = [described(row) for row in rows if row.raw_bytes() != server[row.uid]]
    assert not differ, differ
    assert_processed_or_failed_with_a_reason(rows)

    # Processing again (the admin's "replay") is idempotent: nothing processed changes.
    assert Case.objects.filter(mailbox=mailbox).exists()
    made = what_processing_made(mailbox)
    before = {row.pk: (row.outcome, row.outcome_reason, row.sender, row.subject) for row in rows}
    for row in rows:
        inbound_replay(message_id=row.pk)
    after = {
        row.pk: (row.outcome, row.outcome_reason, row.sender, row.subject)
        for row in ledger(mailbox)
    }
    changed = [pk for pk, was in before.items() if after[pk] != was]
    assert not changed, changed
    assert what_processing_made(mailbox) == made


def test_every_corpus_message_is_stored_over_pop3_as_the_server_returns_it(
    dovecot, connected, poll, corpus
):
    user = dovecot.add_user()
    mailbox = connected(user, protocol="pop3")
    deliver_all(dovecot, user, corpus)

    poll_until_quiet(poll, mailbox)

    rows = ledger(mailbox)
    assert len(rows) == len(corpus)
    server = pop3_bodies(dovecot, user)
    assert sorted(row.uidl for row in rows) == sorted(server)
    differ = [described(row) for row in rows if row.raw_bytes() != server[row.uidl]]
    assert not differ, differ
    assert_processed_or_failed_with_a_reason(rows)
