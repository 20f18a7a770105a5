"""The inbound task queue: new mail waits without a case until an agent takes it; taking opens
the case assigned to that agent, and the customer's replies join it as usual."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from cases.models import Case, CaseMessage, QueueItem
from cases.queue import queue_take, queue_take_next, queue_waiting
from cases.services import inbound_replay
from mailboxes.models import InboundMessage, OutboundMessage
from tests.cases.conftest import case_of, mail

State = QueueItem.State


@pytest.fixture
def queued(channel):
    def make(**fields):
        return channel(flow="task_queue", **fields)

    return make


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", email="ann@example.test")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", email="bob@example.test")


@pytest.mark.django_db
def test_a_new_email_waits_on_the_queue_without_a_case(queued, receive):
    support = queued()

    row = receive(support, mail(subject="Broken kettle"))

    (item,) = queue_waiting(mailboxes=[support])
    assert (item.sender, item.subject, item.inbound) == ("carol@example.org", "Broken kettle", row)
    assert row.outcome == InboundMessage.Outcome.PROCESSED
    assert row.outcome_reason == f"Queued for the channel's agents (queue item {item.pk})"
    assert not Case.objects.exists()
    assert not OutboundMessage.objects.exists()  # no acknowledgement naming a case yet

    inbound_replay(message_id=row.pk)
    assert QueueItem.objects.count() == 1


@pytest.mark.django_db
def test_taking_the_next_opens_the_oldest_as_a_case_assigned_to_the_agent(queued, receive, ann):
    support = queued()
    first = receive(support, mail(subject="First", attachments=[("bill.pdf", b"%PDF-1")]))
    receive(support, mail(sender="Dan <dan@example.org>", subject="Second"))

    case = queue_take_next(user=ann, mailboxes=[support])

    assert (case.subject, case.address, case.assignee, case.state) == (
        "First",
        "carol@example.org",
        ann,
        Case.State.OPEN,
    )
    (message,) = case.messages.all()
    assert (message.inbound, message.joined_by) == (first, CaseMessage.JoinedBy.NEW)
    assert [a.filename for a in message.attachments.all()] == ["bill.pdf"]
    assert case_of(first) == case  # the ledger says where the email went
    item = QueueItem.objects.get(inbound=first)
    assert (item.state, item.taken_by, item.case) == (State.TAKEN, ann, case)
    assert [i.subject for i in queue_waiting(mailboxes=[support])] == ["Second"]


@pytest.mark.django_db
def test_an_item_taken_already_is_not_taken_again(queued, receive, ann, bob):
    support = queued()
    receive(support, mail())
    item = QueueItem.objects.get()

    assert queue_take(item_id=item.pk, user=ann) is not None
    assert queue_take(item_id=item.pk, user=bob) is None
    assert queue_take_next(user=bob, mailboxes=[support]) is None
    assert Case.objects.get().assignee == ann


@pytest.mark.django_db
def test_only_the_given_channels_are_taken_from(queued, receive, ann):
    support, sales = queued(), queued()
    receive(sales, mail(subject="For sales"))

    assert queue_take_next(user=ann, mailboxes=[support]) is None
    assert queue_take_next(user=ann, mailboxes=[sales]).subject == "For sales"


@pytest.mark.django_db
def test_the_customers_reply_after_taking_joins_the_case(queued, receive, ann):
    support = queued()
    original = mail(subject="Broken kettle")
    receive(support, original)
    case = queue_take_next(user=ann, mailboxes=[support])
    first_id = case.messages.get().message_id

    row = receive(
        support,
        mail(
            subject="Re: Broken kettle",
            body="It is the blue one.",
            headers={"In-Reply-To": first_id, "References": first_id},
        ),
    )

    assert case_of(row) == case
    assert case.messages.count() == 2
    assert not queue_waiting(mailboxes=[support]).exists()


@pytest.mark.django_db
def test_a_follow_up_before_anyone_took_the_email_waits_with_it_and_joins_its_case(
    queued, receive, ann
):
    support = queued()
    first = receive(support, mail(subject="Broken kettle"))
    second = receive(
        support,
        mail(
            subject="Re: Broken kettle",
            body="Also the lid.",
            headers={"In-Reply-To": first.message_id},
        ),
    )
    third = receive(  # answers the follow-up: still the same conversation
        support,
        mail(
            subject="Re: Broken kettle",
            body="And the cord.",
            headers={"References": second.message_id},
        ),
    )
    receive(support, mail(sender="Dan <dan@example.org>", subject="Other"))

    assert [i.subject for i in queue_waiting(mailboxes=[support])] == ["Broken kettle", "Other"]
    assert (
        "Queued with the email it answers"
        in InboundMessage.objects.get(pk=second.pk).outcome_reason
    )

    case = queue_take_next(user=ann, mailboxes=[support])

    assert [(m.inbound_id, m.joined_by) for m in case.messages.order_by("pk")] == [
        (first.pk, CaseMessage.JoinedBy.NEW),
        (second.pk, CaseMessage.JoinedBy.IN_REPLY_TO),
        (third.pk, CaseMessage.JoinedBy.REFERENCES),
    ]
    assert case_of(second) == case_of(third) == case
    assert set(QueueItem.objects.exclude(subject="Other").values_list("state", "taken_by")) == {
        (State.TAKEN, ann.pk)
    }
    assert [i.subject for i in queue_waiting(mailboxes=[support])] == ["Other"]
    assert queue_take_next(user=ann, mailboxes=[support]).subject == "Other"


@pytest.mark.django_db(transaction=True)
def test_two_agents_taking_at_once_never_get_the_same_email(queued, dovecot, poll, ann, bob):
    support = queued()
    for n in range(8):
        dovecot.deliver(support.mail_user, mail(subject=f"Question {n}"))
    poll(support)
    assert queue_waiting(mailboxes=[support]).count() == 8
    taken: dict[str, list[Case]] = {"ann": [], "bob": []}
    barrier, errors = threading.Barrier(2), []

    def agent(user) -> None:
        barrier.wait()
        try:
            while (case := queue_take_next(user=user, mailboxes=[support])) is not None:
                taken[user.username].append(case)
        except Exception as exc:  # noqa: BLE001 - a clash must fail the test, not a thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=agent, args=(user,)) for user in (ann, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    cases = taken["ann"] + taken["bob"]
    subjects = sorted(case.subject for case in cases)
    assert subjects == sorted(f"Question {n}" for n in range(8))  # each once, none left
    assert Case.objects.count() == 8
    for name, mine in taken.items():
        assert all(case.assignee.username == name for case in mine)
        assert all(case.messages.count() == 1 for case in mine)
    assert not queue_waiting(mailboxes=[support]).exists()
