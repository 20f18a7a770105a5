"""Confirming unknown senders (seed 001): the sender's POST creates the case from the held
message, and releases their other messages held on the channel; messages nobody confirmed
expire, kept and visible with the reason."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cases.flows import WEBHOOK_FLOW, case_start, confirmation_token_hash, webhook_post
from cases.models import Confirmation
from cases.parse import mail_parse
from cases.services import Incoming, decision_record, message_decide, size_notice_apply
from mailboxes.models import InboundMessage

logger = logging.getLogger(__name__)
Outcome = InboundMessage.Outcome
AFTER = ", after the sender confirmed"

# What a link can be: waiting for the button, done, too late, or never issued.
WAITING, CONFIRMED, USED, EXPIRED, UNKNOWN = "waiting", "confirmed", "used", "expired", "unknown"


def confirmation_state(*, token: str, now: datetime | None = None) -> str:
    """What the page shows for a link (a GET): never changes anything."""
    found = Confirmation.objects.filter(token_hash=confirmation_token_hash(token)).first()
    return _state(found, now or timezone.now())


def confirmation_accept(*, token: str) -> str:
    """The sender pressed "Confirm": used once. The sender is a person, so every message of
    theirs held on the channel is released, in the order they arrived: the first opens a case,
    the later ones join it (or open their own) as if they had just come in."""
    digest = confirmation_token_hash(token)
    now = timezone.now()
    with transaction.atomic(durable=True):
        claimed = Confirmation.objects.filter(
            token_hash=digest, confirmed_at=None, expired_at=None, expires_at__gt=now
        ).update(confirmed_at=now)
        found = Confirmation.objects.filter(token_hash=digest).first()
        if not claimed:
            return _state(found, now)
        others = Confirmation.objects.filter(
            mailbox_id=found.mailbox_id,
            address__iexact=found.address,
            confirmed_at=None,
            expired_at=None,
        )
        held = sorted([found.inbound_id, *others.values_list("inbound_id", flat=True)])
        others.update(confirmed_at=now)
        for position, inbound_id in enumerate(held):
            _release(inbound_id, first=position == 0)
    logger.info(
        "confirmation %s: the sender confirmed; %d message(s) released", found.pk, len(held)
    )
    return CONFIRMED


def _release(inbound_id: int, *, first: bool) -> None:
    message = InboundMessage.objects.select_related("mailbox").get(pk=inbound_id)
    if message.outcome != Outcome.HELD:
        return  # an administrator already dealt with it
    parsed = mail_parse(message.raw_bytes(), arrived=message.server_date or message.stored_at)
    incoming = Incoming(message, message.mailbox, parsed)
    if first:
        decision = size_notice_apply(incoming, case_start(incoming, after=AFTER))
        if message.mailbox.flow == WEBHOOK_FLOW:
            decision = webhook_post(incoming, decision)
    else:
        # The sender now has a case here, so the flow no longer holds their mail.
        decision = message_decide(incoming)
        decision = replace(decision, reason=f"{decision.reason}; released{AFTER}")
    decision_record(message, decision, parsed)


def confirmations_expire(*, now: datetime | None = None) -> int:
    """Held messages past their confirmation time stay kept, with why no case was made."""
    now = now or timezone.now()
    hours = settings.POSTROOM_CONFIRMATION_HOURS
    expired = 0
    due = Confirmation.objects.filter(confirmed_at=None, expired_at=None, expires_at__lte=now)
    for held in due.only("pk", "inbound_id", "created_at"):
        with transaction.atomic(durable=True):
            claimed = Confirmation.objects.filter(
                pk=held.pk, confirmed_at=None, expired_at=None
            ).update(expired_at=now)
            if not claimed:
                continue
            reason = (
                f"Kept, no case: the sender did not confirm within {hours} hours "
                f"(asked {held.created_at:%Y-%m-%d %H:%M} UTC)"
            )
            InboundMessage.objects.filter(pk=held.inbound_id, outcome=Outcome.HELD).update(
                outcome=Outcome.IGNORED, outcome_reason=reason
            )
            expired += 1
    if expired:
        logger.info("%d unconfirmed held messages expired", expired)
    return expired


def _state(found: Confirmation | None, now: datetime) -> str:
    if found is None:
        return UNKNOWN
    if found.confirmed_at is not None:
        return USED
    if found.expired_at is not None or found.expires_at <= now:
        return EXPIRED
    return WAITING
