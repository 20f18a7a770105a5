"""The inbound pipeline's entry point: every stored message ends processed or failed, with why.

Until cases exist (issue 8) processing parses the message and records what it found. It is
idempotent: a processed message is left alone, a failed one can be retried.
"""

from __future__ import annotations

import email
import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from cases.mail_policy import POLICY
from mailboxes.models import InboundMessage

logger = logging.getLogger(__name__)
FINAL = (InboundMessage.Outcome.PROCESSED, InboundMessage.Outcome.IGNORED)


def inbound_process_many(*, message_ids: Iterable[int]) -> None:
    for message_id in message_ids:
        inbound_process(message_id=message_id)


def inbound_replay(*, message_id: int) -> InboundMessage.Outcome:
    """Process a message again. Side effects already done are keyed by (message, step) in
    ProcessingStep and are not repeated."""
    return inbound_process(message_id=message_id, replay=True)


def inbound_process(*, message_id: int, replay: bool = False) -> InboundMessage.Outcome:
    message = InboundMessage.objects.get(pk=message_id)
    if message.outcome in FINAL and not replay:
        return message.outcome
    try:
        facts = _parse(message.raw_bytes())
    except Exception as exc:  # noqa: BLE001 - any parser failure is recorded, never raised
        logger.info("message %s failed to parse: %s", message_id, type(exc).__name__)
        return _record(
            message,
            InboundMessage.Outcome.FAILED,
            reason=f"Could not be parsed: {type(exc).__name__}: {exc}"[:2000],
        )
    return _record(message, InboundMessage.Outcome.PROCESSED, **facts)


def _parse(raw: bytes) -> dict:
    if not raw.strip():
        raise ValueError("the message is empty")
    parsed = email.message_from_bytes(raw, policy=POLICY)
    return {
        "sender": _header(parsed, "From")[:320],
        "subject": _header(parsed, "Subject")[:500],
    }


def _header(parsed, name: str) -> str:
    """A header as text; a malformed one degrades to its raw form instead of failing."""
    try:
        value = parsed.get(name, "")
        return " ".join(str(value).split())
    except Exception:  # noqa: BLE001 - email's header parser raises many kinds on bad input
        raw = parsed.get_all(name, failobj=[""])[0]
        return " ".join(str(raw).encode("ascii", "replace").decode().split())


def _record(message: InboundMessage, outcome: str, *, reason: str = "", **facts) -> str:
    with transaction.atomic():
        InboundMessage.objects.filter(pk=message.pk).update(
            outcome=outcome,
            outcome_reason=reason or message.outcome_reason,
            processed_at=timezone.now(),
            attempts=message.attempts + 1,
            **facts,
        )
    return outcome
