"""Store first: raw messages saved with their server identity, and the cursor advanced, in one
transaction. Nothing may change on the server until that transaction has committed.
"""

from __future__ import annotations

import email.errors
import email.header
import email.parser
import email.policy
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from mailboxes.models import ErasedMessage, InboundMessage, KnownUidl, Mailbox
from mailboxes.unreadable import unreadable_mark

# INTERNALDATE is the server's clock, in whole seconds: only mail a day older than the cursor
# counts as history during a rescan. Erring towards import is safe (stored mail is recognised).
HISTORY_MARGIN = timedelta(days=1)
TRUNCATED_NOTE = "Over the channel's size cap ({size} bytes > {cap}): only the headers were kept."


@dataclass(frozen=True)
class Fetched:
    """A message as a provider handed it over, with its server identity."""

    raw: bytes
    size: int
    uid: int | None = None
    uidl: str = ""
    server_date: datetime | None = None
    truncated: bool = False
    # Set (to the server's reason) when the server would not hand it over: raw is empty.
    unreadable: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@dataclass(frozen=True)
class Headline:
    """Who wrote, about what, under which Message-ID: read from the header block as the mail is
    stored, so the ledger says it whatever processing later makes of the message."""

    message_id: str
    sender: str
    subject: str


def headline_of(raw: bytes) -> Headline:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    value = headers.get("Message-ID", "")
    return Headline(
        message_id=" ".join(str(value).split())[:255],
        sender=_decoded(headers.get("From", ""))[:320],
        subject=_decoded(headers.get("Subject", ""))[:500],
    )


def _decoded(value) -> str:
    """A header's text with RFC 2047 words decoded; as written when they cannot be."""
    try:
        text = str(email.header.make_header(email.header.decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        text = str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.replace("\x00", "\ufffd").split())


def messages_store(
    *,
    mailbox: Mailbox,
    uidvalidity: int | None,
    fetched: Sequence[Fetched],
    checkpoint_uid: int | None = None,
    leave_on_server: bool = False,
) -> list[InboundMessage]:
    """Save a batch and advance the IMAP cursor to `checkpoint_uid`, atomically.

    Messages whose identity is already stored are skipped (a retried batch stores nothing
    twice). Returns the rows created.
    """
    # Mail erased on request ("erase contact") is not brought back by a re-fetch.
    erased = set(
        ErasedMessage.objects.filter(sha256__in=[item.sha256 for item in fetched]).values_list(
            "sha256", flat=True
        )
    )
    fetched = [item for item in fetched if item.sha256 not in erased]
    prepared = [_prepare(mailbox, uidvalidity, item, leave_on_server) for item in fetched]
    with transaction.atomic(durable=True):
        created = [row for row in prepared if not _seen_before(mailbox, row) and _insert(row)]
        if checkpoint_uid is not None:
            fields = {"last_uid": checkpoint_uid}
            if mailbox.rescan_through_uid and checkpoint_uid >= mailbox.rescan_through_uid:
                fields["rescan_through_uid"] = None  # the rescan is complete
            Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
            for name, value in fields.items():
                setattr(mailbox, name, value)
    return created


def _seen_before(mailbox: Mailbox, row: InboundMessage) -> bool:
    """During a rescan after UIDVALIDITY changed: the same bytes stored under the old numbering,
    or mail that was in the folder before the channel was connected (never imported)."""
    if row.uid is None or not mailbox.rescan_through_uid or row.uid > mailbox.rescan_through_uid:
        return False
    started = mailbox.cursor_set_at
    if row.server_date and started and row.server_date < started - HISTORY_MARGIN:
        return True
    return InboundMessage.objects.filter(
        mailbox=mailbox, message_id=row.message_id, size=row.size, sha256=row.sha256
    ).exists()


def _prepare(
    mailbox: Mailbox, uidvalidity: int | None, item: Fetched, leave_on_server: bool
) -> InboundMessage:
    headline = headline_of(item.raw)
    row = InboundMessage(
        mailbox=mailbox,
        message_id=headline.message_id,
        sender=headline.sender,
        subject=headline.subject,
        protocol=mailbox.protocol,
        uidvalidity=uidvalidity if item.uid is not None else None,
        uid=item.uid,
        uidl=item.uidl,
        size=item.size,
        sha256=item.sha256,
        truncated=item.truncated,
        server_date=item.server_date,
        server_action_done=leave_on_server or mailbox.after_import == Mailbox.AfterImport.LEAVE,
    )
    if item.unreadable:
        unreadable_mark(row, item.unreadable)
    elif item.truncated:
        row.outcome_reason = TRUNCATED_NOTE.format(size=item.size, cap=mailbox.max_message_size)
    raw_attach(row, item.raw)
    return row


def raw_attach(row: InboundMessage, raw: bytes) -> None:
    """Put the bytes on the (unsaved or refetched) row: inline, or in file storage when large."""
    if len(raw) > settings.POSTROOM_RAW_INLINE_MAX:
        # Large messages live in file storage (a volume or S3), not in a database row. The file
        # is written before the row: a crash leaves at worst an unreferenced file, never a row
        # without its bytes.
        name = f"raw/{row.mailbox.channel_id}/{timezone.now():%Y/%m}/{row.sha256}.eml"
        row.raw_file.name = (
            name if default_storage.exists(name) else default_storage.save(name, ContentFile(raw))
        )
        row.raw = None
    else:
        row.raw = raw


def message_unreadable_store(
    *,
    mailbox: Mailbox,
    reason: str,
    uid: int | None = None,
    uidl: str = "",
    checkpoint_uid: int | None = None,
    leave_on_server: bool = False,
) -> None:
    """Record a message the server would not hand over, in its place (mailboxes.unreadable)."""
    messages_store(
        mailbox=mailbox,
        uidvalidity=mailbox.uidvalidity if uid is not None else None,
        fetched=[Fetched(raw=b"", size=0, uid=uid, uidl=uidl, unreadable=reason)],
        checkpoint_uid=checkpoint_uid,
        leave_on_server=leave_on_server,
    )


def message_refetched(*, row: InboundMessage, fetched: Fetched) -> InboundMessage:
    """The server handed over a message it had refused before: the row gets its bytes and
    waits for processing, and its after-import action is due (unless it is older mail an
    import brought in: that stays on the server as it is)."""
    mailbox = row.mailbox
    headline = headline_of(fetched.raw)
    row.sha256, row.message_id = fetched.sha256, headline.message_id
    row.sender, row.subject = headline.sender, headline.subject
    row.size, row.truncated = fetched.size, fetched.truncated
    row.server_date = fetched.server_date or row.server_date
    row.fetch_error, row.fetch_retry_at = "", None
    row.outcome = InboundMessage.Outcome.PENDING
    row.outcome_reason = (
        TRUNCATED_NOTE.format(size=fetched.size, cap=mailbox.max_message_size)
        if fetched.truncated
        else ""
    )
    history = row.uid is not None and row.uid <= (mailbox.import_through_uid or 0)
    row.server_action_done = history or mailbox.after_import == Mailbox.AfterImport.LEAVE
    raw_attach(row, fetched.raw)
    row.save()
    return row


def _insert(row: InboundMessage) -> bool:
    identity = (
        {"uidvalidity": row.uidvalidity, "uid": row.uid}
        if row.uid is not None
        else {"uidl": row.uidl}
    )
    if InboundMessage.objects.filter(mailbox=row.mailbox, **identity).exists():
        return False
    row.save()
    return True


def cursor_start(
    *, mailbox: Mailbox, uidvalidity: int | None, last_uid: int | None, note: str
) -> None:
    """Set where "new mail" starts, and say so on the channel page."""
    now = timezone.now()
    fields = {
        "uidvalidity": uidvalidity,
        "last_uid": last_uid,
        "cursor_set_at": now,
        "cursor_note": f"{note} ({now:%Y-%m-%d %H:%M} UTC)"[:300],
    }
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
    for name, value in fields.items():
        setattr(mailbox, name, value)


def known_uidls_replace(*, mailbox: Mailbox, uidls: Iterable[str]) -> None:
    """The POP3 baseline: these UIDLs were on the server before the cursor; never import them."""
    with transaction.atomic():
        KnownUidl.objects.filter(mailbox=mailbox).delete()
        KnownUidl.objects.bulk_create(
            [KnownUidl(mailbox=mailbox, uidl=u) for u in set(uidls)], batch_size=1000
        )


def pop3_seen_uidls(*, mailbox: Mailbox) -> set[str]:
    stored = InboundMessage.objects.filter(mailbox=mailbox).exclude(uidl="")
    return set(stored.values_list("uidl", flat=True)) | set(
        mailbox.known_uidls.values_list("uidl", flat=True)
    )


def pending_server_actions(*, mailbox: Mailbox) -> list[InboundMessage]:
    """Stored messages whose after-import action has not run yet (a crash came between)."""
    rows = InboundMessage.objects.filter(mailbox=mailbox, server_action_done=False)
    if mailbox.protocol == Mailbox.Protocol.IMAP:
        rows = rows.filter(uidvalidity=mailbox.uidvalidity, uid__isnull=False)
    else:
        rows = rows.exclude(uidl="")
    return list(rows.only("pk", "uid", "uidl", "server_copied"))


def server_copied_mark(*, mailbox: Mailbox, uids: Iterable[int]) -> None:
    """These were copied to the move-to folder; only their removal is left (see server_copied)."""
    InboundMessage.objects.filter(
        mailbox=mailbox, uidvalidity=mailbox.uidvalidity, uid__in=list(uids)
    ).update(server_copied=True)


def server_actions_done(*, message_ids: Iterable[int]) -> None:
    InboundMessage.objects.filter(pk__in=list(message_ids)).update(server_action_done=True)
