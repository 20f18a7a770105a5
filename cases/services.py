"""The inbound pipeline's entry point: parse → filter → flow (the rows it writes: cases.records).

Every stored message ends processed, ignored, held or failed, with why, on its ledger row.
Processing is idempotent: a message whose decision wrote anything (a case message, an automatic
reply) has a `ProcessingStep` row written in the same transaction, and replaying it changes
nothing. A message that was only ignored wrote nothing, so replay decides again (say,
after the administrator changed the sender filter).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from cases.auto_reply import size_notice_send
from cases.filtering import channel_addresses, sender_filter_check
from cases.models import Case, CaseEvent, CaseMessage, Task
from cases.parse import ParsedMail, header_text, mail_parse
from cases.records import case_message_add_inbound, case_message_add_outbound
from cases.tasks import task_replied, task_reply_add
from cases.threads import thread_find
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage, ProcessingStep
from mailboxes.storage import TRUNCATED_NOTE

logger = logging.getLogger(__name__)
Outcome = InboundMessage.Outcome
FINAL = (Outcome.PROCESSED, Outcome.IGNORED, Outcome.HELD)
STEP = "case"


@dataclass(frozen=True)
class Incoming:
    """What a flow is handed: the ledger row, its channel and what parsing found."""

    message: InboundMessage
    mailbox: Mailbox
    parsed: ParsedMail

    @cached_property
    def own_addresses(self) -> set[str]:
        """The channel's addresses, read once per message (every step asks for them)."""
        return channel_addresses(mailbox=self.mailbox)


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str
    result: dict = field(default_factory=dict)
    wrote: bool = False  # something was written that a replay must not write again


def inbound_process_many(*, message_ids: Iterable[int]) -> list[str]:
    """Process a stored batch in order, each message's outcome. The channel is read once for
    the batch: an administrator's edit applies from the next batch, as with a poll's."""
    channels: dict[int, Mailbox] = {}
    return [inbound_process(message_id=pk, channels=channels) for pk in message_ids]


def inbound_replay(*, message_id: int) -> str:
    """Process a message again; what it already did is not done twice."""
    return inbound_process(message_id=message_id, replay=True)


def inbound_process(
    *, message_id: int, replay: bool = False, channels: dict[int, Mailbox] | None = None
) -> str:
    """`channels`: the batch's channels by id, filled as they are read (inbound_process_many)."""
    message = _ledger_row(message_id, channels)
    if (message.outcome in FINAL and not replay) or message.fetch_error:
        return message.outcome  # never read (mailboxes.unreadable): nothing to process yet
    if ProcessingStep.objects.filter(message=message, step=STEP).exists():
        # Done once: a replay is counted, and changes nothing else.
        InboundMessage.objects.filter(pk=message.pk).update(attempts=F("attempts") + 1)
        return message.outcome
    try:
        parsed = mail_parse(message.raw_bytes(), arrived=message.server_date or message.stored_at)
    except Exception as exc:  # noqa: BLE001 - any parser failure is recorded, never raised
        logger.info("message %s failed to parse: %s", message_id, type(exc).__name__)
        return _record_failure(message, f"Could not be parsed: {type(exc).__name__}: {exc}")
    try:
        with transaction.atomic():
            decision = message_decide(Incoming(message, message.mailbox, parsed))
            decision_record(message, decision, parsed)
    except Exception as exc:  # noqa: BLE001 - one bad message never stops a poll
        logger.exception("message %s failed in the pipeline", message_id)
        return _record_failure(message, f"Processing failed: {type(exc).__name__}: {exc}")
    return decision.outcome


def _ledger_row(message_id: int, channels: dict[int, Mailbox] | None) -> InboundMessage:
    if channels is None:
        return InboundMessage.objects.select_related("mailbox").get(pk=message_id)
    message = InboundMessage.objects.get(pk=message_id)
    if message.mailbox_id in channels:
        message.mailbox = channels[message.mailbox_id]
    else:
        channels[message.mailbox_id] = message.mailbox  # a row of some 125 columns: once
    return message


def message_decide(incoming: Incoming) -> Decision:
    """What becomes of one message, written (inside the caller's transaction), not recorded."""
    return size_notice_apply(incoming, _decide(incoming))


def _decide(incoming: Incoming) -> Decision:
    mailbox, parsed = incoming.mailbox, incoming.parsed
    if parsed.is_bounce:
        return _bounce(incoming)
    duplicate = _duplicate_of(incoming)
    if duplicate is not None:
        return Decision(
            Outcome.IGNORED,
            f"Already on case #{duplicate.case.reference} (same Message-ID {parsed.message_id})",
            {"case": duplicate.case_id, "duplicate_of": duplicate.pk},
        )
    if mailbox.process_task_replies:
        # Before the sender filter: an agent answering our own assignment mail is not a
        # customer the filter is about.
        task = task_replied(mailbox_id=mailbox.pk, parsed=parsed)
        if task is not None:
            return _task_reply(incoming, task)
    if parsed.sender in incoming.own_addresses:
        return _from_channel(incoming)
    verdict = sender_filter_check(rules=mailbox.sender_filter, address=parsed.sender)
    if not verdict.allowed:
        return Decision(Outcome.IGNORED, f"Refused: {verdict.reason}")
    return flow_handler(name=mailbox.flow)(incoming)


def flow_handler(*, name: str):
    """The handler registered for a flow name (settings.POSTROOM_FLOWS); unknown names fall
    back to creating cases, so a removed flow never drops mail."""
    entry = settings.POSTROOM_FLOWS.get(name) or settings.POSTROOM_FLOWS["create_case"]
    return import_string(entry[2])


def decision_record(message: InboundMessage, decision: Decision, parsed: ParsedMail) -> None:
    reason = decision.reason
    if message.truncated:
        cap = message.mailbox.max_message_size
        reason += ". " + TRUNCATED_NOTE.format(size=message.size, cap=cap)
    InboundMessage.objects.filter(pk=message.pk).update(
        outcome=decision.outcome,
        outcome_reason=reason[:2000],
        result=decision.result,
        processed_at=timezone.now(),
        attempts=message.attempts + 1,
        sender=header_text(parsed.message, "From")[:320],
        subject=parsed.subject[:500],
    )
    if decision.wrote:
        # A held message's step is rewritten when its sender confirms. Not update_or_create:
        # its two savepoints and a locking read cost more than this UPDATE and INSERT.
        steps = ProcessingStep.objects.filter(message=message, step=STEP)
        if not steps.update(result=decision.result):
            ProcessingStep.objects.create(message=message, step=STEP, result=decision.result)


def _record_failure(message: InboundMessage, reason: str) -> str:
    InboundMessage.objects.filter(pk=message.pk).update(
        outcome=Outcome.FAILED,
        outcome_reason=reason[:2000],
        processed_at=timezone.now(),
        attempts=message.attempts + 1,
    )
    return Outcome.FAILED


def _duplicate_of(incoming: Incoming) -> CaseMessage | None:
    """The same mail again (a copy to an alias, a re-delivery): same Message-ID and bytes, or a
    Message-ID Postroom itself sent."""
    msgid = incoming.parsed.message_id
    if not msgid:
        return None
    # Plain values, not rows: a candidate's ledger row would bring its raw bytes along.
    candidates = CaseMessage.objects.filter(
        case__mailbox=incoming.mailbox, message_id=msgid
    ).values_list("pk", "outbound_id", "inbound_id", "inbound__sha256")
    for pk, outbound_id, inbound_id, sha256 in candidates:
        if outbound_id is not None or (
            inbound_id is not None and sha256 == incoming.message.sha256
        ):
            return CaseMessage.objects.select_related("case").get(pk=pk)
    return None


def _bounce(incoming: Incoming) -> Decision:
    """A delivery report (RFC 3464) goes on the case of the message it reports on."""
    ids = incoming.parsed.bounce_of
    sent = OutboundMessage.objects.filter(mailbox=incoming.mailbox, message_id__in=ids).first()
    if sent is None:
        about = ", ".join(ids) or "no Message-ID it names"
        return Decision(Outcome.IGNORED, f"Delivery report about a message not sent here ({about})")
    outbound_bounced(row=sent, text=bounce_text(incoming.parsed))
    on_case = CaseMessage.objects.filter(outbound=sent).select_related("case").first()
    result = {"bounce_of": sent.pk}
    if on_case is None:
        reason = f"Delivery report for outgoing message {sent.pk}, marked bounced"
        return Decision(Outcome.PROCESSED, reason, result, wrote=True)
    added = case_message_add_inbound(
        case=on_case.case,
        incoming=incoming,
        joined_by=CaseMessage.JoinedBy.BOUNCE,
        detail=sent.message_id,
    )
    reason = (
        f"Delivery report for outgoing message {sent.pk}, marked bounced and added to case "
        f"#{on_case.case_id}"
    )
    result.update(case=on_case.case_id, case_message=added.pk)
    return Decision(Outcome.PROCESSED, reason, result, wrote=True)


STATUS_FIELDS = ("Final-Recipient", "Action", "Status", "Diagnostic-Code")


def bounce_text(parsed: ParsedMail) -> str:
    """What a delivery report says, for the outbox: its status fields, then its human text."""
    lines = []
    for part in parsed.message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in part.get_payload() or []:
            for name in STATUS_FIELDS:
                value = block.get(name) if hasattr(block, "get") else None
                if value:
                    lines.append(f"{name}: {' '.join(str(value).split())}")
    text = parsed.text.strip()
    return "\n".join([*lines, *([""] if lines and text else []), text])[:4000]


def outbound_bounced(*, row: OutboundMessage, text: str) -> None:
    """A delivery report about a sent message: it did not reach (all) its recipients."""
    now = timezone.now()
    OutboundMessage.objects.filter(pk=row.pk).update(bounced_at=now, bounce_text=text)
    # Only a sent message becomes "bounced": a report cannot overtake a send in progress.
    OutboundMessage.objects.filter(pk=row.pk, state=OutboundMessage.State.SENT).update(
        state=OutboundMessage.State.BOUNCED
    )
    logger.info("outgoing message %s bounced", row.pk)


def _task_reply(incoming: Incoming, task: Task) -> Decision:
    """Seed 001 "process task replies": the answer goes into the task's history, not the
    case thread the customer's conversation is in."""
    entry = task_reply_add(
        task=task,
        message=incoming.message,
        parsed=incoming.parsed,
        marker=incoming.mailbox.end_of_message_marker,
    )
    reason = f"Reply to task “{task.title}” on case #{task.case.reference}: added to the task"
    result = {"task": task.pk, "task_entry": entry.pk, "task_case": task.case_id}
    return Decision(Outcome.PROCESSED, reason, result, wrote=True)


def size_notice_apply(incoming: Incoming, decision: Decision) -> Decision:
    """A message over the channel's size cap was kept as headers only: when it reached a case,
    its sender is told (under the automatic-reply rules) and the case says so."""
    message = incoming.message
    if not message.truncated or decision.outcome != Outcome.PROCESSED:
        return decision
    case = Case.objects.filter(pk=decision.result.get("case")).first()
    row, why = size_notice_send(
        mailbox=incoming.mailbox,
        parsed=incoming.parsed,
        case=case,
        size=message.size,
        own=incoming.own_addresses,
    )
    result = {**decision.result, "size_notice": row.pk if row else None}
    said = "size notice sent" if row else f"no size notice: {why}"
    if case is not None:
        if row is not None:
            added = case_message_add_outbound(case=case, row=row, own=incoming.own_addresses)
            result["size_notice_message"] = added.pk
        cap = incoming.mailbox.max_message_size
        note = f"A message from {incoming.parsed.sender or 'an unknown sender'} was over the "
        note += f"size cap ({message.size} bytes > {cap}): only its headers were kept; {said}"
        CaseEvent.objects.create(case=case, kind=CaseEvent.Kind.NOTE, detail=note[:500])
    reason = f"{decision.reason}; {said}"
    return replace(decision, reason=reason, result=result, wrote=decision.wrote or bool(row))


def _from_channel(incoming: Incoming) -> Decision:
    """Mail from the channel's own address: a colleague answered from their mail client."""
    parsed = incoming.parsed
    match = thread_find(
        mailbox=incoming.mailbox,
        sender=parsed.sender,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        subject=parsed.subject,
        require_part=False,
    )
    if match.case is None:
        return Decision(Outcome.IGNORED, "Sent from the channel's own address and answers no case")
    added = case_message_add_inbound(
        case=match.case,
        incoming=incoming,
        joined_by=match.joined_by,
        detail=match.detail,
        direction=CaseMessage.Direction.OUT,
    )
    reason = f"Sent from the channel's own address: recorded on case #{match.case.reference}"
    return Decision(
        Outcome.PROCESSED, reason, {"case": match.case.pk, "case_message": added.pk}, wrote=True
    )
