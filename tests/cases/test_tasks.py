"""Tasks on a case: the assignment mail goes out through the SMTP fixture, and the assignee's
answer comes back through Dovecot into the task's history (or the case, with the switch off)."""

from __future__ import annotations

import pytest

from cases.models import CaseEvent, CaseMessage, Task, TaskEntry
from cases.services import inbound_replay
from cases.tasks import task_create, task_done
from mailboxes.models import InboundMessage
from pollers.outbox import outbox_send_due
from tests.cases.conftest import MARKER, case_of, mail
from tests.cases.test_confirm import sending_through

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome
Entry = TaskEntry.Kind


@pytest.fixture
def desk(channel, smtp, receive):
    """make(**fields) -> (channel, case): a channel sending through the SMTP fixture, with a
    case Carol opened."""

    def make(**fields):
        support = sending_through(smtp, channel(**fields))
        return support, case_of(receive(support, mail()))

    return make


def assigned(smtp, task: Task):
    """The assignment mail as the SMTP fixture received it."""
    (received,) = [m for m in smtp.messages if task.assignee_address in m.rcpt_tos]
    return received.message


def answer(original, *, sender: str, body: str) -> bytes:
    """What the assignee's client sends when they reply, quoting the assignment."""
    quote = "\n".join(
        f"> {line}" for line in original.get_body(("plain",)).get_content().split("\n")
    )
    headers = {"In-Reply-To": original["Message-ID"], "References": original["Message-ID"]}
    text = f"{body}\n\nOn Monday, Support wrote:\n{quote}\n"
    return mail(sender=sender, subject=f"Re: {original['Subject']}", headers=headers, body=text)


def test_the_assignee_is_mailed_and_their_reply_goes_into_the_task(
    desk, smtp, receive, django_user_model
):
    support, case = desk(process_task_replies=True)
    agent = django_user_model.objects.create_user("ann", email="ann@example.test")
    lead = django_user_model.objects.create_user("lee", email="lee@example.test")

    task = task_create(
        case=case,
        title="Order a new kettle",
        description="Model K2, white.",
        assignee=agent,
        created_by=lead,
    )
    outbox_send_due(mailbox_id=support.pk)

    sent = assigned(smtp, task)
    assert task.assignee_address == "ann@example.test"
    assert sent["Subject"] == f"Task: Order a new kettle [#{case.reference}]"
    assert sent["Message-ID"] == task.assignment_message_id
    text = sent.get_body(("plain",)).get_content()
    assert "lee@example.test gave you a task" in text
    assert "Model K2, white." in text
    assert "Reply to this mail to add to the task's history" in text
    thread_before = list(case.messages.values_list("pk", flat=True))

    row = receive(
        support, answer(sent, sender="Ann <ann@example.test>", body="Ordered, arrives Friday.")
    )

    row.refresh_from_db()
    assert row.outcome == Outcome.PROCESSED
    assert row.outcome_reason == (
        f"Reply to task “Order a new kettle” on case #{case.reference}: added to the task"
    )
    reply = task.entries.get(kind=Entry.REPLY)
    assert (reply.text, reply.author, reply.inbound) == (
        "Ordered, arrives Friday.",
        "ann@example.test",
        row,
    )
    assert [e.kind for e in task.entries.all()] == [Entry.CREATED, Entry.MAILED, Entry.REPLY]
    assert list(case.messages.values_list("pk", flat=True)) == thread_before  # not in the thread
    assert inbound_replay(message_id=row.pk) == Outcome.PROCESSED
    assert task.entries.count() == 3


def test_with_task_replies_off_the_answer_joins_the_case_thread(desk, smtp, receive):
    support, case = desk(process_task_replies=False)
    task = task_create(case=case, title="Call the courier", assignee_address="ann@example.test")
    outbox_send_due(mailbox_id=support.pk)
    sent = assigned(smtp, task)
    assert "Reply to this mail" not in sent.get_body(("plain",)).get_content()

    row = receive(support, answer(sent, sender="ann@example.test", body="Called them."))

    assert case_of(row) == case
    added = case.messages.get(inbound=row)
    assert (added.joined_by, added.joined_detail) == (
        CaseMessage.JoinedBy.IN_REPLY_TO,
        task.assignment_message_id,
    )
    assert added.text == "Called them."
    assert not task.entries.filter(kind=Entry.REPLY).exists()


def test_someone_else_answering_the_assignment_does_not_write_in_the_task(desk, smtp, receive):
    support, case = desk(process_task_replies=True)
    task = task_create(case=case, title="Call the courier", assignee_address="ann@example.test")
    outbox_send_due(mailbox_id=support.pk)

    row = receive(support, answer(assigned(smtp, task), sender="eve@example.net", body="Hi"))

    assert not task.entries.filter(kind=Entry.REPLY).exists()
    assert case_of(row) != case  # a stranger gets a case of their own, as anywhere
    assert "is on case" in row.outcome_reason


def test_a_task_without_an_address_sends_nothing_and_is_done_once(desk, smtp, django_user_model):
    support, case = desk()
    lead = django_user_model.objects.create_user("lee", email="lee@example.test")
    task = task_create(case=case, title="Check the warranty", created_by=lead)
    outbox_send_due(mailbox_id=support.pk)

    task_done(task=task, by=lead)
    task_done(task=task, by=lead)

    assert task.state == Task.State.DONE and task.done_at is not None
    assert [(e.kind, e.author) for e in task.entries.all()] == [
        (Entry.CREATED, "lee@example.test"),
        (Entry.DONE, "lee@example.test"),
    ]
    assert task.assignment_message_id == ""
    assert not [m for m in smtp.messages if "Check the warranty" in str(m.message["Subject"])]
    assert list(CaseEvent.objects.filter(case=case).values_list("detail", flat=True)) == [
        "Task “Check the warranty” created",
        "Task “Check the warranty” done",
    ]


def test_an_address_compose_refuses_creates_no_task(desk):
    _support, case = desk()

    with pytest.raises(ValueError, match="Not a valid email address"):
        task_create(case=case, title="Call", assignee_address="ann@@example")

    assert not Task.objects.exists()


def test_the_marker_cuts_the_reply_even_without_a_quote_header(desk, smtp, receive):
    support, case = desk(process_task_replies=True)
    task = task_create(case=case, title="Refund", assignee_address="ann@example.test")
    outbox_send_due(mailbox_id=support.pk)
    sent = assigned(smtp, task)
    headers = {"In-Reply-To": sent["Message-ID"]}
    body = f"Refunded.\n\n{MARKER}\n\nold text"

    receive(
        support, mail(sender="ann@example.test", subject="Re: task", headers=headers, body=body)
    )

    assert task.entries.get(kind=Entry.REPLY).text == "Refunded."
