"""Automatic replies (acknowledgement, refusal, confirmation request): when one may go, and
sending it.

RFC 3834 §2: never answer automatic mail, and mark our own `Auto-Submitted: auto-replied`
(compose does, for `Draft(automatic=True)`). Never to the channel's own addresses, and at most
POSTROOM_AUTO_REPLIES_PER_HOUR to one address, so two auto-responders cannot ping-pong even when
one of them ignores those headers.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.template import Context, Template, TemplateSyntaxError
from django.template.loader import render_to_string
from django.utils import timezone

from cases.filtering import channel_addresses
from cases.models import AutoReply, Case
from cases.parse import ParsedMail
from mailboxes.compose import TEMPLATE_CHANNEL_FIELDS, Draft
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.outbox import outbound_enqueue

logger = logging.getLogger(__name__)
Kind = AutoReply.Kind
OUTBOUND_KIND = {Kind.ACKNOWLEDGEMENT: OutboundMessage.Kind.ACKNOWLEDGEMENT}


def auto_reply_blocker(*, mailbox: Mailbox, parsed: ParsedMail) -> str:
    """Why no automatic reply may go to this message's sender, or "" when one may."""
    to = parsed.sender
    if not to:
        return "the message has no sender address"
    if parsed.automatic:
        return f"the message is automatic ({parsed.automatic})"
    if parsed.is_bounce:
        return "the message is a delivery report"
    if to in channel_addresses(mailbox=mailbox):
        return "the sender is this channel's own address"
    since = timezone.now() - timedelta(hours=1)
    sent = AutoReply.objects.filter(address=to, sent_at__gte=since).count()
    if sent >= settings.POSTROOM_AUTO_REPLIES_PER_HOUR:
        return f"{sent} automatic replies already went to this address in the last hour"
    return ""


def acknowledgement_send(
    *, mailbox: Mailbox, parsed: ParsedMail, case: Case
) -> tuple[OutboundMessage | None, str]:
    """The channel's acknowledgement for a new case: (row, "") or (None, why not)."""
    if not mailbox.auto_ack_template.strip():
        return None, "the channel has no acknowledgement template"
    try:
        template = Template(mailbox.auto_ack_template)
    except TemplateSyntaxError:
        return None, "the acknowledgement template does not compile"
    context = {**_context(mailbox, parsed), "case": {"reference": case.reference}}
    text = template.render(Context(context, autoescape=False))
    return _send(mailbox, parsed, Kind.ACKNOWLEDGEMENT, text, case_reference=case.reference)


def refusal_send(*, mailbox: Mailbox, parsed: ParsedMail) -> tuple[OutboundMessage | None, str]:
    """Seed 001 "allow new case" off: tell the sender their mail opened no case."""
    context = _context(mailbox, parsed)
    text = render_to_string("cases/mail/refusal.txt", context)
    return _send(mailbox, parsed, Kind.REFUSAL, text, case_reference="")


def confirmation_send(
    *, mailbox: Mailbox, parsed: ParsedMail, confirm_url: str, expires_at
) -> tuple[OutboundMessage | None, str]:
    """Seed 001 "confirm unknown senders": ask the sender to open the link and confirm."""
    context = {**_context(mailbox, parsed), "confirm_url": confirm_url, "expires_at": expires_at}
    text = render_to_string("cases/mail/confirmation.txt", context)
    return _send(mailbox, parsed, Kind.CONFIRMATION, text, case_reference="")


def _context(mailbox: Mailbox, parsed: ParsedMail) -> dict:
    # A plain dict, never the model: a template must not reach the channel's secrets.
    channel = {name: getattr(mailbox, name) for name in TEMPLATE_CHANNEL_FIELDS}
    contact = {"name": parsed.sender_name, "address": parsed.sender}
    return {"channel": channel, "contact": contact, "subject": parsed.subject}


def _send(
    mailbox: Mailbox, parsed: ParsedMail, kind: str, text: str, *, case_reference: str
) -> tuple[OutboundMessage | None, str]:
    blocker = auto_reply_blocker(mailbox=mailbox, parsed=parsed)
    if blocker:
        return None, blocker
    draft = Draft(
        to=[parsed.sender],
        subject=_re(parsed.subject),
        text=text,
        in_reply_to=parsed.message_id,
        references=parsed.references,
        case_reference=case_reference,
        automatic=True,
        use_template=False,
    )
    try:
        row = outbound_enqueue(
            mailbox=mailbox,
            draft=draft,
            kind=OUTBOUND_KIND.get(kind, OutboundMessage.Kind.NOTIFICATION),
        )
    except ValueError as exc:  # an address compose refuses
        return None, str(exc)
    AutoReply.objects.create(
        mailbox=mailbox, address=parsed.sender, kind=kind, outbound=row, sent_at=timezone.now()
    )
    return row, ""


def _re(subject: str) -> str:
    subject = subject.strip()
    if not subject:
        return "Re: your message"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"
