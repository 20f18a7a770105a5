"""Data kept, and for how long: the channel's retention purge, and erasing a contact.

Retention deletes bytes (raw mail, attachment files) and keeps the cases and their text.
Erasing a contact deletes their messages and files and keeps only a SHA-256 of each message,
so a re-fetch of the same bytes is recognised by storage and not stored again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cases.models import Attachment, Case, CaseMessage, Confirmation, Contact
from mailboxes.models import ErasedMessage, InboundMessage, Mailbox, OutboundMessage

logger = logging.getLogger(__name__)
SENT_STATES = (
    OutboundMessage.State.SENT,
    OutboundMessage.State.FAILED,
    OutboundMessage.State.BOUNCED,
)


@dataclass(frozen=True)
class Purged:
    raw: int = 0
    files: int = 0


def retention_purge(*, now: datetime | None = None) -> Purged:
    """For every channel with a retention, delete raw mail and attachment files older than it."""
    now = now or timezone.now()
    raw = files = 0
    for mailbox in Mailbox.objects.filter(retention_days__isnull=False):
        purged = mailbox_purge(mailbox=mailbox, before=now - timedelta(days=mailbox.retention_days))
        raw, files = raw + purged.raw, files + purged.files
    return Purged(raw, files)


def mailbox_purge(*, mailbox: Mailbox, before: datetime) -> Purged:
    now = timezone.now()
    old = InboundMessage.objects.filter(
        mailbox=mailbox, stored_at__lt=before, raw_purged_at=None
    ).exclude(outcome__in=[InboundMessage.Outcome.PENDING, InboundMessage.Outcome.HELD])
    raw = 0
    for row in old.only("pk", "raw_file"):
        if row.raw_file:
            default_storage.delete(row.raw_file.name)
        raw += InboundMessage.objects.filter(pk=row.pk, raw_purged_at=None).update(
            raw=None, raw_file="", raw_purged_at=now
        )
    files = Attachment.objects.filter(
        message__case__mailbox=mailbox, message__created_at__lt=before, purged_at=None
    ).exclude(file="")
    count = 0
    for attachment in files.only("pk", "file"):
        default_storage.delete(attachment.file.name)
        count += Attachment.objects.filter(pk=attachment.pk).update(file="", purged_at=now)
    if raw or count:
        logger.info(
            "channel %s: retention (%s days) purged the raw mail of %d messages and %d files",
            mailbox.pk,
            mailbox.retention_days,
            raw,
            count,
        )
    return Purged(raw, count)


@dataclass(frozen=True)
class Erased:
    cases: int
    messages: int
    files: int


def contact_erase(*, contact: Contact) -> Erased:
    """Remove a contact, their cases, messages and files; keep a hash of each received message."""
    address = contact.address
    cases = Case.objects.filter(Q(contact=contact) | Q(address__iexact=address))
    case_messages = CaseMessage.objects.filter(case__in=cases)
    inbound = InboundMessage.objects.filter(
        Q(case_message__in=case_messages)
        | Q(confirmation__address__iexact=address)
        | Q(sender__iexact=address)
        | Q(sender__iendswith=f"<{address}>")
    ).distinct()
    files = [a.file.name for a in Attachment.objects.filter(message__in=case_messages) if a.file]
    raw_files = [r.raw_file.name for r in inbound.only("raw_file") if r.raw_file]
    with transaction.atomic(durable=True):
        hashes = set(inbound.values_list("sha256", flat=True))
        ErasedMessage.objects.bulk_create(
            [ErasedMessage(sha256=h) for h in hashes], ignore_conflicts=True
        )
        outbound_ids = list(
            case_messages.filter(outbound__state__in=SENT_STATES).values_list("outbound", flat=True)
        )
        counts = Erased(cases.count(), len(hashes), len(files))
        Confirmation.objects.filter(inbound__in=inbound).delete()
        InboundMessage.objects.filter(pk__in=list(inbound.values_list("pk", flat=True))).delete()
        cases.delete()
        OutboundMessage.objects.filter(pk__in=outbound_ids).delete()
        contact.delete()
    # Files go after the commit: a rollback must not leave rows pointing at nothing.
    for name in [*files, *raw_files]:
        default_storage.delete(name)
    logger.info(
        "contact %s erased: %d cases, %d received messages (tombstones kept), %d files",
        contact.pk,
        counts.cases,
        counts.messages,
        counts.files,
    )
    return counts
