"""The rows a message becomes on a case: its contact, the case, the case message with its
attachments and participants, written by the inbound pipeline and by agents' replies alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.base import ContentFile
from django.db.models import Q
from django.utils import timezone
from django.utils.text import get_valid_filename

from cases.filtering import channel_addresses
from cases.models import Attachment, Case, CaseMessage, Contact
from cases.parse import ParsedMail, mail_parse
from cases.quoting import text_strip_quoted
from cases.threads import participants_add
from mailboxes.models import Mailbox, OutboundMessage

if TYPE_CHECKING:
    from cases.services import Incoming

MAX_ATTACHMENTS = 5  # seed 001: "allow up to 5 attachments"


def contact_for(*, address: str, name: str, create: bool) -> Contact | None:
    if not address:
        return None
    contact = Contact.objects.filter(address__iexact=address).first()
    if contact is None and create:
        contact = Contact.objects.create(address=address, name=name)
    return contact


def case_open(*, mailbox: Mailbox, parsed: ParsedMail, contact: Contact | None) -> Case:
    return Case.objects.create(
        mailbox=mailbox,
        contact=contact,
        address=parsed.sender,
        subject=parsed.subject or "(no subject)",
    )


def case_message_add_inbound(
    *,
    case: Case,
    incoming: Incoming,
    joined_by: str,
    detail: str = "",
    direction: str = CaseMessage.Direction.IN,
) -> CaseMessage:
    parsed, mailbox = incoming.parsed, incoming.mailbox
    added = CaseMessage.objects.create(
        case=case,
        direction=direction,
        inbound=incoming.message,
        joined_by=joined_by,
        joined_detail=detail[:300],
        automatic=parsed.automatic[:200],
        **_message_fields(parsed, marker=mailbox.end_of_message_marker),
    )
    _attachments_keep(added, parsed, mailbox)
    participants_add(
        case=case, addresses=[parsed.sender, *parsed.recipients], exclude=incoming.own_addresses
    )
    if direction == CaseMessage.Direction.IN and case.state in REOPENED_BY_CUSTOMER:
        # The customer wrote again: a solved or waiting case needs an agent again.
        Case.objects.filter(pk=case.pk).update(state=Case.State.OPEN)
    case_touch(case=case, at=added.date)
    return added


# A case waiting on the customer, or solved, goes back to the agents when the customer writes.
REOPENED_BY_CUSTOMER = (Case.State.PENDING, Case.State.SOLVED)


def case_touch(*, case: Case, at) -> None:
    """Keep the case's newest-message time (the case list's order) and updated_at."""
    now = timezone.now()
    Case.objects.filter(pk=case.pk).update(updated_at=now)
    Case.objects.filter(pk=case.pk).filter(
        Q(last_message_at__isnull=True) | Q(last_message_at__lt=at)
    ).update(last_message_at=at)


def case_message_add_outbound(
    *, case: Case, row: OutboundMessage, own: set[str] | None = None
) -> CaseMessage:
    """Record a message Postroom sends on its case, so replies to it thread back. `own`: the
    channel's addresses, when the caller has them already."""
    parsed = mail_parse(bytes(row.raw), arrived=timezone.now())
    if own is None:
        own = channel_addresses(mailbox=row.mailbox)
    participants_add(case=case, addresses=parsed.recipients, exclude=own)
    added = CaseMessage.objects.create(
        case=case,
        direction=CaseMessage.Direction.OUT,
        outbound=row,
        joined_by=CaseMessage.JoinedBy.POSTROOM,
        automatic="auto-replied" if row.kind != OutboundMessage.Kind.REPLY else "",
        **_message_fields(parsed, marker=""),
    )
    case_touch(case=case, at=added.date)
    return added


def _message_fields(parsed: ParsedMail, *, marker: str) -> dict:
    return {
        "message_id": parsed.message_id[:255],
        "sender": parsed.sender[:320],
        "sender_name": parsed.sender_name[:200],
        "recipients": parsed.recipients,
        "subject": parsed.subject[:500],
        "date": parsed.date,
        "text": text_strip_quoted(parsed.text, marker=marker),
        "full_text": parsed.text,
        "html": parsed.html,
    }


def _attachments_keep(added: CaseMessage, parsed: ParsedMail, mailbox: Mailbox) -> None:
    """Seed 001: up to 5 files per message when the channel allows them, each under the size
    limit; files sent as attachments go before inline images. The rest are listed, not kept."""
    limit = settings.POSTROOM_ATTACHMENT_MAX_BYTES
    kept = 0
    for part in sorted(parsed.attachments, key=lambda a: a.inline):
        if not mailbox.attachments_allowed:
            reason = "attachments are off on this channel"
        elif kept >= MAX_ATTACHMENTS:
            reason = f"only the first {MAX_ATTACHMENTS} files of a message are kept"
        elif len(part.data) > limit:
            reason = f"larger than the {limit:,} byte limit"
        else:
            reason = ""
        row = Attachment(
            message=added,
            filename=part.filename,
            content_type=part.content_type,
            size=len(part.data),
            content_id=part.content_id,
            kept=not reason,
            not_kept_reason=reason,
        )
        if not reason:
            row.file.save(
                attachment_storage_name(part.filename), ContentFile(part.data), save=False
            )
            kept += 1
        row.save()


def attachment_storage_name(filename: str) -> str:
    """The sender's file name, reduced to one safe path segment ("../../x" is "x")."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return get_valid_filename(base[-100:]) if base.strip(". ") else "attachment"
