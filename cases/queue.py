"""The "inbound task queue" flow (seed 002): new mail waits on its channel's queue, without a
case, until an agent takes it; taking opens the case, assigned to that agent.

Two agents pressing "next" at once never get the same email: an item is taken by a conditional
UPDATE (waiting -> taken) whose row count says who won.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from cases.flows import refuse, thread_join
from cases.models import Case, CaseEvent, CaseMessage, QueueItem
from cases.parse import mail_parse
from cases.records import case_message_add_inbound, case_open, contact_for
from cases.services import STEP, Decision, Incoming
from mailboxes.models import InboundMessage, Mailbox, ProcessingStep

Outcome = InboundMessage.Outcome
State = QueueItem.State
# How many of the oldest waiting items one "take next" tries before looking again.
TAKE_BATCH = 20


def queue_flow(incoming: Incoming) -> Decision:
    """A reply to a case joins it as usual; a new conversation waits on the queue."""
    joined, _note = thread_join(incoming)
    if joined is not None:
        return joined
    head = _waiting_conversation(incoming)
    if head is None and not incoming.mailbox.allow_new_case:
        return refuse(incoming)
    item = QueueItem.objects.create(
        mailbox=incoming.mailbox,
        inbound=incoming.message,
        follows=head,
        sender=incoming.parsed.sender[:320],
        subject=incoming.parsed.subject[:500],
    )
    if head is not None:
        reason = f"Queued with the email it answers (queue item {head.pk}), taken together"
    else:
        reason = f"Queued for the channel's agents (queue item {item.pk})"
    return Decision(Outcome.PROCESSED, reason, {"queue_item": item.pk}, wrote=True)


def _waiting_conversation(incoming: Incoming) -> QueueItem | None:
    """The waiting item whose email (or a follow-up of it) this one answers: one conversation
    is one item, so two agents never take halves of it."""
    named = [*incoming.parsed.in_reply_to, *incoming.parsed.references]
    if not named:
        return None
    answered = (
        QueueItem.objects.filter(
            mailbox=incoming.mailbox, state=State.WAITING, inbound__message_id__in=named
        )
        .select_related("follows")
        .first()
    )
    if answered is None:
        return None
    return answered.follows or answered


def queue_waiting(*, mailboxes: Iterable[Mailbox] | QuerySet) -> QuerySet[QueueItem]:
    """The items waiting on these channels, oldest first."""
    return (
        QueueItem.objects.filter(mailbox__in=mailboxes, state=State.WAITING)
        # A follow-up waits with its conversation; alone only if it came as that was taken.
        .exclude(follows__state=State.WAITING)
        .select_related("mailbox")
        .order_by("created_at", "pk")
    )


def queue_take_next(*, user, mailboxes: Iterable[Mailbox] | QuerySet) -> Case | None:
    """Take the oldest waiting item among these channels; None when there is none left."""
    while True:
        candidates = list(queue_waiting(mailboxes=mailboxes).values_list("pk", flat=True))
        if not candidates:
            return None
        for item_id in candidates[:TAKE_BATCH]:
            case = queue_take(item_id=item_id, user=user)
            if case is not None:
                return case
        # Every one of them was taken by someone else meanwhile: look again.


def queue_take(*, item_id: int, user) -> Case | None:
    """Take one item and open its case assigned to `user`; None when it was already taken."""
    with transaction.atomic():
        now = timezone.now()
        won = QueueItem.objects.filter(pk=item_id, state=State.WAITING).update(
            state=State.TAKEN, taken_by=user, taken_at=now
        )
        if not won:
            return None
        item = QueueItem.objects.select_related("inbound", "mailbox", "follows").get(pk=item_id)
        if item.follows and item.follows.case_id:
            _follow_up_add(item, item.follows.case, user, now)
            return item.follows.case
        case = _case_open_for(item, user)
        QueueItem.objects.filter(pk=item.pk).update(case=case)
        for follow_up in item.follow_ups.select_related("inbound", "mailbox").order_by("pk"):
            _follow_up_add(follow_up, case, user, now)
    return case


def _follow_up_add(item: QueueItem, case: Case, user, now) -> None:
    """A follow-up joins the case its conversation became, as a reply would have."""
    message = item.inbound
    parsed = mail_parse(message.raw_bytes(), arrived=message.server_date or message.stored_at)
    joined_by = (
        CaseMessage.JoinedBy.IN_REPLY_TO if parsed.in_reply_to else CaseMessage.JoinedBy.REFERENCES
    )
    added = case_message_add_inbound(
        case=case,
        incoming=Incoming(message, item.mailbox, parsed),
        joined_by=joined_by,
        detail=f"queued with the email it answers, taken by {user.get_username()}",
    )
    QueueItem.objects.filter(pk=item.pk).update(
        state=State.TAKEN, taken_by=user, taken_at=now, case=case
    )
    _ledger_says(
        message,
        {"queue_item": item.pk, "case": case.pk, "case_message": added.pk, "joined_by": joined_by},
        f"Queued with the email it answers, then "
        f"taken by {user.get_username()}: case #{case.reference}",
    )


def _ledger_says(message: InboundMessage, result: dict, reason: str) -> None:
    InboundMessage.objects.filter(pk=message.pk).update(result=result, outcome_reason=reason)
    ProcessingStep.objects.update_or_create(message=message, step=STEP, defaults={"result": result})


def _case_open_for(item: QueueItem, user) -> Case:
    """The case the item's email starts, joined as any new conversation is; the ledger row
    says which case the email ended on."""
    message = item.inbound
    parsed = mail_parse(message.raw_bytes(), arrived=message.server_date or message.stored_at)
    incoming = Incoming(message, item.mailbox, parsed)
    contact = contact_for(
        address=parsed.sender,
        name=parsed.sender_name,
        create=item.mailbox.create_contact_for_unknown,
    )
    case = case_open(mailbox=item.mailbox, parsed=parsed, contact=contact)
    Case.objects.filter(pk=case.pk).update(assignee=user, state=Case.State.OPEN)
    case.refresh_from_db()
    who = user.get_username()
    added = case_message_add_inbound(
        case=case,
        incoming=incoming,
        joined_by=CaseMessage.JoinedBy.NEW,
        detail=f"taken from the queue by {who}",
    )
    CaseEvent.objects.create(
        case=case, kind=CaseEvent.Kind.ASSIGN, actor=user, detail=f"Taken from the queue by {who}"
    )
    result = {"queue_item": item.pk, "case": case.pk, "case_message": added.pk, "joined_by": "new"}
    _ledger_says(message, result, f"Queued, then taken by {who}: case #{case.reference}")
    return case
