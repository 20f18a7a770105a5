"""Tasks on a case (seed 001): work assigned to an agent with an assignment mail.

The assignment goes out through the channel's outbox; its Message-ID is kept on the task, so
that with the channel's "process task replies" on, a reply to it goes into the task's history
instead of the case thread (cases.services asks `task_replied`).
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from cases.filtering import channel_addresses
from cases.models import Case, CaseEvent, Task, TaskEntry
from cases.parse import ParsedMail
from cases.quoting import text_strip_quoted
from cases.threads import participants_add
from mailboxes.compose import TEMPLATE_CHANNEL_FIELDS, Draft
from mailboxes.models import InboundMessage, OutboundMessage
from mailboxes.outbox import outbound_enqueue

logger = logging.getLogger(__name__)
Entry = TaskEntry.Kind


def task_create(
    *,
    case: Case,
    title: str,
    description: str = "",
    assignee: AbstractBaseUser | None = None,
    assignee_address: str = "",
    created_by: AbstractBaseUser | None = None,
) -> Task:
    """Create a task on a case and, when there is an address to send it to (the one given, or
    the assignee's), mail the assignment. An address compose refuses raises ValueError and
    nothing is created."""
    address = (assignee_address or getattr(assignee, "email", "") or "").strip()
    with transaction.atomic():
        task = Task.objects.create(
            case=case,
            title=title[:300],
            description=description,
            assignee=assignee,
            assignee_address=address,
            created_by=created_by,
        )
        TaskEntry.objects.create(task=task, kind=Entry.CREATED, author=_who(created_by))
        to = f", assigned to {address}" if address else ""
        _case_event(task, created_by, f"Task “{task.title}” created{to}")
        if address:
            _assignment_send(task, address)
    return task


def task_done(*, task: Task, by: AbstractBaseUser | None) -> Task:
    """Mark a task done, once: a second click (or a second agent) changes nothing."""
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, state=Task.State.OPEN).update(
            state=Task.State.DONE, done_at=timezone.now()
        )
        if done:
            TaskEntry.objects.create(task=task, kind=Entry.DONE, author=_who(by))
            _case_event(task, by, f"Task “{task.title}” done")
    task.refresh_from_db()
    return task


def task_replied(*, mailbox_id: int, parsed: ParsedMail) -> Task | None:
    """The task whose assignment mail this message answers (In-Reply-To or References), when
    its sender is the address the assignment went to; otherwise None."""
    ids = [*parsed.in_reply_to, *parsed.references]
    if not ids or not parsed.sender:
        return None
    tasks = Task.objects.filter(
        case__mailbox_id=mailbox_id, assignment_message_id__in=ids
    ).select_related("case", "assignee")
    for task in tasks.order_by("-pk"):
        if parsed.sender.lower() in _addresses_of(task):
            return task
    return None


def task_reply_add(
    *, task: Task, message: InboundMessage, parsed: ParsedMail, marker: str
) -> TaskEntry:
    """A reply to an assignment mail, in the task's history with its quoted history cut."""
    return TaskEntry.objects.create(
        task=task,
        kind=Entry.REPLY,
        inbound=message,
        author=parsed.sender[:320],
        text=text_strip_quoted(parsed.text, marker=marker),
    )


def _assignment_send(task: Task, address: str) -> OutboundMessage:
    case, mailbox = task.case, task.case.mailbox
    channel = {name: getattr(mailbox, name) for name in TEMPLATE_CHANNEL_FIELDS}
    context = {
        "task": task,
        "case": {"reference": case.reference, "subject": case.subject, "address": case.address},
        "channel": channel,
        "by": _who(task.created_by),
        "replies_kept": mailbox.process_task_replies,
    }
    draft = Draft(
        to=[address],
        subject=f"Task: {task.title}",
        text=render_to_string("cases/mail/task_assignment.txt", context),
        case_reference=case.reference,
        use_template=False,  # the case response template is for customers
    )
    row = outbound_enqueue(mailbox=mailbox, draft=draft, kind=OutboundMessage.Kind.NOTIFICATION)
    Task.objects.filter(pk=task.pk).update(assignment=row, assignment_message_id=row.message_id)
    task.assignment, task.assignment_message_id = row, row.message_id
    TaskEntry.objects.create(task=task, kind=Entry.MAILED, text=f"Assignment mailed to {address}")
    # The assignee was openly addressed about the case: with task replies off, their answer
    # threads into the case like anyone else's who takes part.
    participants_add(case=case, addresses=[address], exclude=channel_addresses(mailbox=mailbox))
    return row


def _addresses_of(task: Task) -> set[str]:
    found = {task.assignee_address, getattr(task.assignee, "email", "") or ""}
    return {a.lower() for a in found if a}


def _case_event(task: Task, actor, detail: str) -> None:
    CaseEvent.objects.create(
        case=task.case, kind=CaseEvent.Kind.TASK, actor=actor, detail=detail[:500]
    )


def _who(user: AbstractBaseUser | None) -> str:
    if user is None:
        return ""
    return (getattr(user, "email", "") or user.get_username())[:320]
