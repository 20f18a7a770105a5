"""Automatic replies (acknowledgement, refusal, confirmation request, size notice): when one may
go, and sending it.

RFC 3834 §2: never answer automatic mail, and mark our own `Auto-Submitted: auto-replied`
(compose does, for `Draft(automatic=True)`). Never to the channel's own addresses, and at most
POSTROOM_AUTO_REPLIES_PER_HOUR to one address, so two auto-responders cannot ping-pong even when
one of them ignores those headers.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from datetime import timedelta

from django.conf import settings
from django.template import Context
from django.template.loader import render_to_string
from django.utils import timezone

from cases.filtering import channel_addresses
from cases.models import AutoReply, Case
from cases.parse import ParsedMail
from mailboxes.compose import TEMPLATE_CHANNEL_FIELDS, Draft, template_compile
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.outbox import outbound_enqueue

logger = logging.getLogger(__name__)
Kind = AutoReply.Kind
OUTBOUND_KIND = {Kind.ACKNOWLEDGEMENT: OutboundMessage.Kind.ACKNOWLEDGEMENT}
Own = AbstractSet[str] | None  # the channel's own addresses, when the caller read them


def auto_reply_blocker(*, mailbox: Mailbox, parsed: ParsedMail, own: Own = None) -> str:
    """Why no automatic reply may go to this message's sender, or "" when one may. `own`: the
    channel's addresses, when the caller has them already (read here otherwise)."""
    to = parsed.sender
    if not to:
        return "the message has no sender address"
    if parsed.automatic:
        return f"the message is automatic ({parsed.automatic})"
    if parsed.is_bounce:
        return "the message is a delivery report"
    if to in (channel_addresses(mailbox=mailbox) if own is None else own):
        return "the sender is this channel's own address"
    since = timezone.now() - timedelta(hours=1)
    sent = AutoReply.objects.filter(address=to, sent_at__gte=since).count()
    if sent >= settings.POSTROOM_AUTO_REPLIES_PER_HOUR:
        return f"{sent} automatic replies already went to this address in the last hour"
    return ""


def acknowledgement_send(
    *, mailbox: Mailbox, parsed: ParsedMail, case: Case, own: Own = None
) -> tuple[OutboundMessage | None, str]:
    """The channel's acknowledgement for a new case: (row, "") or (None, why not)."""
    if not mailbox.auto_ack_template.strip():
        return None, "the channel has no acknowledgement template"
    context = {**_context(mailbox, parsed), "case": {"reference": case.reference}}
    text = _render(mailbox.auto_ack_template, context)
    if text is None:
        return None, "the acknowledgement template does not compile"
    reference = case.reference
    return _send(mailbox, parsed, Kind.ACKNOWLEDGEMENT, text, case_reference=reference, own=own)


def refusal_send(
    *, mailbox: Mailbox, parsed: ParsedMail, own: Own = None
) -> tuple[OutboundMessage | None, str]:
    """Seed 001 "allow new case" off: tell the sender their mail opened no case. The channel's
    refusal template when it has one, a built-in text otherwise."""
    context = _context(mailbox, parsed)
    text = _channel_text(mailbox.refusal_template, "cases/mail/refusal.txt", context)
    return _send(mailbox, parsed, Kind.REFUSAL, text, case_reference="", own=own)


def size_notice_send(
    *, mailbox: Mailbox, parsed: ParsedMail, case: Case | None, size: int, own: Own = None
) -> tuple[OutboundMessage | None, str]:
    """The sender's message was over the channel's size cap and only its headers were kept:
    tell them, so they can send it again smaller. The channel's template or a built-in text."""
    context = {
        **_context(mailbox, parsed),
        "case": {"reference": case.reference} if case else None,
        "size": size,
        "limit": mailbox.max_message_size,
    }
    text = _channel_text(mailbox.size_notice_template, "cases/mail/size_notice.txt", context)
    reference = case.reference if case else ""
    return _send(mailbox, parsed, Kind.SIZE_NOTICE, text, case_reference=reference, own=own)


def confirmation_send(
    *, mailbox: Mailbox, parsed: ParsedMail, confirm_url: str, expires_at, own: Own = None
) -> tuple[OutboundMessage | None, str]:
    """Seed 001 "confirm unknown senders": ask the sender to open the link and confirm."""
    context = {**_context(mailbox, parsed), "confirm_url": confirm_url, "expires_at": expires_at}
    text = render_to_string("cases/mail/confirmation.txt", context)
    return _send(mailbox, parsed, Kind.CONFIRMATION, text, case_reference="", own=own)


def _render(source: str, context: dict) -> str | None:
    """A channel's template in the Django template language, or None when it does not compile
    (the channel form refuses such a template; one stored before that must not stop mail)."""
    template = template_compile(source)
    return None if template is None else template.render(Context(context, autoescape=False))


def _channel_text(source: str, builtin: str, context: dict) -> str:
    """The channel's template when it has one that compiles, the built-in text otherwise."""
    text = _render(source, context) if source.strip() else None
    return text if text is not None else render_to_string(builtin, context)


def _context(mailbox: Mailbox, parsed: ParsedMail) -> dict:
    # A plain dict, never the model: a template must not reach the channel's secrets.
    channel = {name: getattr(mailbox, name) for name in TEMPLATE_CHANNEL_FIELDS}
    contact = {"name": parsed.sender_name, "address": parsed.sender}
    return {"channel": channel, "contact": contact, "subject": parsed.subject}


def _send(
    mailbox: Mailbox, parsed: ParsedMail, kind: str, text: str, *, case_reference: str, own: Own
) -> tuple[OutboundMessage | None, str]:
    blocker = auto_reply_blocker(mailbox=mailbox, parsed=parsed, own=own)
    if blocker:
        return None, blocker
    draft = Draft(
        to=[parsed.sender],
        subject=reply_subject(parsed.subject),
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


def reply_subject(subject: str) -> str:
    subject = subject.strip()
    if not subject:
        return "Re: your message"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"
