"""Flows: what happens to a received email once it passed the filters (seed 002).

Each flow is a function taking an `Incoming` and returning a `Decision`, registered by dotted
path in settings.POSTROOM_FLOWS (a deployment adds its own with POSTROOM_EXTRA_FLOWS). It runs
inside the pipeline's transaction: what it writes commits with the ledger's outcome.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from cases.auto_reply import acknowledgement_send, confirmation_send, refusal_send
from cases.models import Case, CaseMessage, Confirmation
from cases.records import (
    case_message_add_inbound,
    case_message_add_outbound,
    case_open,
    contact_for,
)
from cases.services import Decision, Incoming
from cases.threads import thread_find
from cases.webhooks import webhook_enqueue
from mailboxes.models import InboundMessage

Outcome = InboundMessage.Outcome


def create_case(incoming: Incoming) -> Decision:
    """The default: add the email to the case it answers, or open a case for it."""
    joined, threading_note = thread_join(incoming)
    if joined is not None:
        return joined
    if not incoming.mailbox.allow_new_case:
        return refuse(incoming)
    return _new_case(incoming, threading_note=threading_note)


WEBHOOK_FLOW = "webhook"  # its name in settings.POSTROOM_FLOWS


def webhook(incoming: Incoming) -> Decision:
    """Seed 002 "webhook": what "create case" does, then a signed POST of the email to the
    channel's URL (sent after commit, retried). Mail held for a sender's confirmation is not
    posted (it may be spam) until the sender confirms."""
    decision = create_case(incoming)
    if decision.outcome == Outcome.HELD:
        return decision
    return webhook_post(incoming, decision)


def webhook_post(incoming: Incoming, decision: Decision) -> Decision:
    """Queue the channel's POST of the email beside what was decided for it (a case opened
    by the flow, or by the sender's confirmation)."""
    case_id = decision.result.get("case")
    case = Case.objects.get(pk=case_id) if case_id else None
    delivery = webhook_enqueue(incoming=incoming, case=case)
    if delivery is None:
        return replace(decision, reason=f"{decision.reason}; no webhook URL on the channel")
    result = {**decision.result, "webhook": delivery.pk}
    reason = f"{decision.reason}; webhook delivery {delivery.pk} queued"
    return replace(decision, reason=reason, result=result, wrote=True)


def thread_join(incoming: Incoming) -> tuple[Decision | None, str]:
    """Add the email to the case it answers: the decision, or None and why nothing matched."""
    parsed = incoming.parsed
    match = thread_find(
        mailbox=incoming.mailbox,
        sender=parsed.sender,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        subject=parsed.subject,
    )
    if match.case is None:
        return None, match.detail
    added = case_message_add_inbound(
        case=match.case, incoming=incoming, joined_by=match.joined_by, detail=match.detail
    )
    label = CaseMessage.JoinedBy(match.joined_by).label
    reason = f"Added to case #{match.case.reference} ({label}: {match.detail})"
    result = {"case": match.case.pk, "case_message": added.pk, "joined_by": match.joined_by}
    return Decision(Outcome.PROCESSED, reason, result, wrote=True), match.detail


def refuse(incoming: Incoming) -> Decision:
    row, why = refusal_send(
        mailbox=incoming.mailbox, parsed=incoming.parsed, own=incoming.own_addresses
    )
    said = "the sender was told" if row else f"no refusal sent: {why}"
    reason = f"Kept, no case: the channel does not allow new cases ({said})"
    return Decision(Outcome.IGNORED, reason, {"refusal": row.pk if row else None}, wrote=bool(row))


def _new_case(incoming: Incoming, *, threading_note: str) -> Decision:
    mailbox = incoming.mailbox
    if mailbox.confirm_unknown_senders and not _known(incoming) and not _has_written(incoming):
        return _hold(incoming)
    return case_start(incoming, threading_note=threading_note)


def case_start(incoming: Incoming, *, threading_note: str = "", after: str = "") -> Decision:
    """Open a case for the message and acknowledge it (a new conversation, or a held message
    whose sender confirmed)."""
    parsed, mailbox = incoming.parsed, incoming.mailbox
    contact = contact_for(
        address=parsed.sender,
        name=parsed.sender_name,
        create=mailbox.create_contact_for_unknown,
    )
    case = case_open(mailbox=mailbox, parsed=parsed, contact=contact)
    added = case_message_add_inbound(
        case=case, incoming=incoming, joined_by=CaseMessage.JoinedBy.NEW, detail=threading_note
    )
    own = incoming.own_addresses
    row, why = acknowledgement_send(mailbox=mailbox, parsed=parsed, case=case, own=own)
    result = {"case": case.pk, "case_message": added.pk, "joined_by": "new"}
    if row is not None:
        result["acknowledgement"] = case_message_add_outbound(case=case, row=row, own=own).pk
    said = "acknowledgement sent" if row else f"no acknowledgement: {why}"
    note = f"; not joined to an earlier case: {threading_note}" if threading_note else ""
    return Decision(
        Outcome.PROCESSED, f"New case #{case.reference}{after} ({said}){note}", result, True
    )


def confirmation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _hold(incoming: Incoming) -> Decision:
    """Seed 001 "confirm unknown senders": keep the message, and mail the sender a link to a
    page whose button (a POST) creates the case."""
    parsed, mailbox = incoming.parsed, incoming.mailbox
    token = secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(hours=settings.POSTROOM_CONFIRMATION_HOURS)
    held = Confirmation.objects.create(
        inbound=incoming.message,
        mailbox=mailbox,
        address=parsed.sender,
        token_hash=confirmation_token_hash(token),
        expires_at=expires_at,
    )
    url = settings.POSTROOM_BASE_URL.rstrip("/") + reverse("cases:confirm", args=[token])
    row, why = confirmation_send(
        mailbox=mailbox,
        parsed=parsed,
        confirm_url=url,
        expires_at=expires_at,
        own=incoming.own_addresses,
    )
    said = "confirmation asked by mail" if row else f"no confirmation mail: {why}"
    reason = f"Held: unknown sender, waiting for confirmation ({said})"
    result = {"confirmation": held.pk, "confirmation_mail": row.pk if row else None}
    return Decision(Outcome.HELD, reason, result, wrote=True)


def _known(incoming: Incoming) -> bool:
    parsed = incoming.parsed
    return contact_for(address=parsed.sender, name=parsed.sender_name, create=False) is not None


def _has_written(incoming: Incoming) -> bool:
    """A sender with a case on this channel is known, contact row or not."""
    address = incoming.parsed.sender
    return bool(address) and Case.objects.filter(mailbox=incoming.mailbox, address=address).exists()
