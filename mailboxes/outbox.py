"""Putting messages in the outbox and managing it; sending is pollers' job (pollers/outbox.py).

`outbound_enqueue` is called inside the caller's transaction (say, with the case message it
belongs to): both commit or neither does, and the send is requested only after commit.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailboxes.compose import Draft, message_compose, recipients_of
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.services import mailbox_sendgrid_settings, mailbox_smtp_settings, network_policy
from mailboxes.signals import send_requested
from providers.config import SendGridSettings, SmtpSettings
from providers.errors import ProviderError
from providers.outgoing import Envelope, SendResult, outgoing_session

State = OutboundMessage.State
TEST_CLAIM = timedelta(minutes=5)
TEST_SUBJECT = "Postroom test mail from {name}"
TEST_TEXT = (
    "This is a test mail from the Postroom channel “{name}” <{address}>.\n\n"
    "If you can read it, the channel's outgoing server works."
)


def outbound_enqueue(
    *, mailbox: Mailbox, draft: Draft, kind: str = OutboundMessage.Kind.REPLY
) -> OutboundMessage:
    row = _outbound_row(mailbox, draft, kind)
    row.save()
    outbox_send_soon(mailbox_id=mailbox.pk)
    return row


def _outbound_row(mailbox: Mailbox, draft: Draft, kind: str, **fields) -> OutboundMessage:
    # Built once, here: a resend after a crash is the same bytes with the same Message-ID.
    message = message_compose(mailbox=mailbox, draft=draft)
    return OutboundMessage(
        mailbox=mailbox,
        kind=kind,
        message_id=message["Message-ID"],
        mail_from=mailbox.email_address,
        recipients=recipients_of(message),
        subject=str(message["Subject"])[:500],
        raw=message.as_bytes(),
        max_attempts=settings.POSTROOM_OUTBOX_MAX_ATTEMPTS,
        **fields,
    )


def outbox_send_soon(*, mailbox_id: int) -> None:
    transaction.on_commit(lambda: send_requested.send(sender=Mailbox, mailbox_id=mailbox_id))


def outbound_send_test(*, mailbox: Mailbox, to: str) -> OutboundMessage:
    """Send a test mail now and return its row, sent or failed: the administrator is waiting.

    The row is committed first as claimed ("sending"): if this process dies mid-send, the
    sweeper sends it once more when the claim expires. The outcome is final either way
    (no retries): the administrator has read it.
    """
    draft = Draft(
        to=[to],
        subject=TEST_SUBJECT.format(name=mailbox.name),
        text=TEST_TEXT.format(name=mailbox.name, address=mailbox.email_address),
        use_template=False,
    )
    owner = f"test-mail-{uuid.uuid4().hex}"
    claim = {"claimed_by": owner, "claim_expires_at": timezone.now() + TEST_CLAIM}
    row = _outbound_row(mailbox, draft, OutboundMessage.Kind.TEST, attempts=1, **claim)
    row.state = State.SENDING
    with transaction.atomic(durable=True):
        row.save()
    envelope = Envelope(row.mail_from, tuple(row.recipients), bytes(row.raw))
    try:
        sender = mailbox_sender_settings(mailbox=mailbox)  # an OAuth2 token may need a refresh
    except ProviderError as err:
        result = SendResult(ok=False, error=err)
    else:
        with outgoing_session(sender, network_policy()) as session:
            result = session.send(envelope)
    OutboundMessage.objects.filter(pk=row.pk, claimed_by=owner).update(**_outcome(result))
    row.refresh_from_db()
    return row


def _outcome(result: SendResult) -> dict:
    now = timezone.now()
    fields = {"claimed_by": "", "claim_expires_at": None}
    if result.ok:
        reply = result.server_reply[:500]
        return {**fields, "state": State.SENT, "sent_at": now, "server_reply": reply}
    return {**fields, "state": State.FAILED, "last_error": str(result.error), "last_error_at": now}


def mailbox_sender_settings(*, mailbox: Mailbox) -> SmtpSettings | SendGridSettings:
    """The outgoing side a channel's server type picks (seed 004: SMTP or SendGrid)."""
    if mailbox.server_type == Mailbox.ServerType.SENDGRID:
        return mailbox_sendgrid_settings(mailbox=mailbox)
    return mailbox_smtp_settings(mailbox=mailbox)


def outbound_resend(*, message_ids: list[int]) -> int:
    """Send failed messages again: same bytes, same Message-ID, a fresh set of attempts."""
    with transaction.atomic():
        rows = OutboundMessage.objects.filter(
            pk__in=message_ids, state=OutboundMessage.State.FAILED
        )
        mailbox_ids = set(rows.values_list("mailbox_id", flat=True))
        count = rows.update(
            state=OutboundMessage.State.QUEUED,
            attempts=0,
            next_attempt_at=timezone.now(),
            claimed_by="",
            claim_expires_at=None,
        )
        for mailbox_id in mailbox_ids:
            outbox_send_soon(mailbox_id=mailbox_id)
    return count


def outbox_resume(*, mailbox: Mailbox) -> None:
    """The administrator fixed the outgoing login: send what waited."""
    with transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(outbox_paused=False, outbox_paused_reason="")
        mailbox.outbox_paused, mailbox.outbox_paused_reason = False, ""
        outbox_send_soon(mailbox_id=mailbox.pk)
