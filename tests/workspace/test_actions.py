"""An agent answers and sorts out cases from the case page: reply, status, assignment, split,
merge and tasks, each recorded with who did it and why."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from cases.actions import ActionRefused, case_reply
from cases.models import Case, CaseEvent, CaseMessage, Task
from mailboxes.models import Alias, Mailbox, OutboundMessage
from pollers.outbox import outbox_send_due
from tests.cases.conftest import case_of, mail
from tests.workspace.conftest import client_for, person

pytestmark = pytest.mark.django_db

RESPONSE_TEMPLATE = (
    "Hello {{ contact.name|default:'there' }},\n\n{{ reply }}\n\n"
    "Kind regards,\n{{ agent.name }} for {{ channel.name }}"
)


@pytest.fixture
def replying(support, smtp):
    """The support channel sending through the SMTP fixture, with a billing alias and a case
    response template; no acknowledgement, so the outbox holds only the agents' replies."""
    smtp.add_user(support.username, support.password)
    Mailbox.objects.filter(pk=support.pk).update(
        smtp_port=smtp.starttls_port,
        smtp_security="starttls",
        auto_ack_template="",
        case_response_template=RESPONSE_TEMPLATE,
    )
    support.refresh_from_db()  # keeps `mail_user`, where receive() delivers
    Alias.objects.create(mailbox=support, address="billing@example.test", display_name="Billing")
    return support


@pytest.fixture
def case(replying, receive):
    return case_of(receive(replying, mail(subject="Broken kettle", body="It does not boil.")))


def detail(client, case: Case) -> str:
    return unescape(client.get(reverse("cases:detail", args=[case.pk])).text)


def textarea(page: str, name: str) -> str:
    found = re.search(rf'<textarea name="{name}"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, f"no {name} field"
    return found.group(1).strip("\n")


def post(client, name: str, case_or_pk, data: dict, **extra):
    pk = case_or_pk.pk if hasattr(case_or_pk, "pk") else case_or_pk
    return client.post(reverse(f"cases:{name}", args=[pk]), data, **extra)


# --- Reply ------------------------------------------------------------------------------------


def test_a_reply_from_an_alias_goes_out_threaded_in_the_response_template(case, agent, smtp):
    client = client_for(agent)
    page = detail(client, case)
    prefilled = textarea(page, "text")
    assert 'value="billing@example.test"' in page  # the alias is offered as From
    assert 'value="carol@example.org"' in page  # To is the customer
    assert prefilled.startswith("Hello Carol Customer,")
    assert "for Support" in prefilled  # the channel's name, from the template

    text = prefilled.replace("\n\n\n\n", "\n\nA new kettle is on its way.\n\n")
    response = post(
        client,
        "reply",
        case,
        {
            "from_address": "billing@example.test",
            "to": "carol@example.org",
            "text": text,
            "state_after": "pending",
        },
        follow=True,
    )

    assert "Reply queued to carol@example.org." in response.text
    reply = case.messages.get(direction=CaseMessage.Direction.OUT)
    assert reply.outbound.state == OutboundMessage.State.QUEUED
    assert re.search(rf'id="message-{reply.pk}".*?Queued', response.text, re.S)

    outbox_send_due(mailbox_id=case.mailbox_id)

    [sent] = smtp.messages
    message = sent.message
    received = case.messages.get(direction=CaseMessage.Direction.IN)
    assert str(message["From"]) == "Billing <billing@example.test>"
    assert message["To"] == "carol@example.org"
    assert message["Subject"] == f"Re: Broken kettle [#{case.pk}]"
    assert message["In-Reply-To"] == received.message_id
    assert received.message_id in message["References"]
    body = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Hello Carol Customer,\n\nA new kettle is on its way.\n\nKind regards," in body
    assert body.count("Kind regards") == 1  # the template is not applied twice
    states = client.get(reverse("cases:states", args=[case.pk])).json()["messages"]
    assert states[str(reply.pk)]["state"] == "sent"
    history = case.events.filter(actor=agent).values_list("kind", "detail")
    assert list(history) == [
        ("note", "Replied from billing@example.test to carol@example.org"),
        ("state", "New → Pending"),
    ]
    case.refresh_from_db()
    assert case.state == Case.State.PENDING  # waiting on the customer


def test_a_from_address_that_is_not_the_channels_is_refused(case, agent):
    client = client_for(agent)

    response = post(
        client,
        "reply",
        case,
        {"from_address": "ceo@example.net", "to": "carol@example.org", "text": "Refund granted"},
        follow=True,
    )

    assert "The reply was not sent" in response.text
    assert "ceo@example.net is not one of the available choices" in unescape(response.text)
    assert "Refund granted" in response.text  # what the agent typed is still there
    assert not OutboundMessage.objects.filter(mailbox=case.mailbox).exists()
    with pytest.raises(ActionRefused, match="not this channel's address or one of its aliases"):
        case_reply(case=case, user=agent, text="Hi", from_address="ceo@example.net")


def test_a_reply_that_is_only_the_template_is_refused(case, agent):
    client = client_for(agent)
    untouched = textarea(detail(client, case), "text")
    data = {"from_address": case.mailbox.email_address, "to": "carol@example.org"}

    response = post(client, "reply", case, {**data, "text": untouched}, follow=True)

    assert "the text is empty or only the channel&#x27;s template" in response.text
    assert not OutboundMessage.objects.filter(mailbox=case.mailbox).exists()


def test_a_reply_carries_the_agents_files_and_refuses_too_large_ones(case, agent, smtp, settings):
    client = client_for(agent)
    manual = SimpleUploadedFile("manual.pdf", b"%PDF-1.4 manual", "application/pdf")

    post(
        client,
        "reply",
        case,
        {
            "from_address": case.mailbox.email_address,
            "to": "carol@example.org",
            "text": "The manual is attached.",
            "files": [manual],
        },
    )
    outbox_send_due(mailbox_id=case.mailbox_id)

    [sent] = smtp.messages
    [part] = sent.message.iter_attachments()
    assert part.get_filename() == "manual.pdf"
    assert part.get_content() == b"%PDF-1.4 manual"
    reply = case.messages.get(direction=CaseMessage.Direction.OUT)
    assert [a.filename for a in reply.attachments.all()] == ["manual.pdf"]

    settings.POSTROOM_ATTACHMENT_MAX_BYTES = 1024
    big = SimpleUploadedFile("photo.jpg", b"x" * 2048, "image/jpeg")
    data = {"from_address": case.mailbox.email_address, "to": "carol@example.org", "text": "Hi"}
    response = post(client, "reply", case, {**data, "files": [big]}, follow=True)

    assert "The reply was not sent: Attachments: The files are larger than" in response.text
    assert case.messages.filter(direction=CaseMessage.Direction.OUT).count() == 1


# --- Status, assignment -----------------------------------------------------------------------


def test_the_agent_sets_the_status_with_a_reason_on_the_history(case, agent):
    client = client_for(agent)

    response = post(
        client,
        "state_set",
        case,
        {"state": "pending", "reason": "Asked for the receipt"},
        follow=True,
    )

    assert "Status set to pending." in response.text
    case.refresh_from_db()
    assert case.state == Case.State.PENDING
    event = case.events.get(kind=CaseEvent.Kind.STATE)
    assert (event.actor, event.detail, event.reason) == (
        agent,
        "New → Pending",
        "Asked for the receipt",
    )
    assert "Asked for the receipt" in detail(client, case)


def test_a_case_is_assigned_only_to_someone_who_sees_its_channel(case, agent, outsider):
    client = client_for(agent)
    colleague = person("carla", groups=case.mailbox.agent_groups.all())

    response = post(
        client, "assign", case, {"assignee": colleague.pk, "reason": "Kettle expert"}, follow=True
    )
    refused = post(client, "assign", case, {"assignee": outsider.pk}, follow=True)

    assert "Assigned to carla." in response.text
    assert "Select a valid choice" in refused.text
    case.refresh_from_db()
    assert case.assignee == colleague
    event = case.events.get(kind=CaseEvent.Kind.ASSIGN)
    assert (event.actor, event.detail, event.reason) == (
        agent,
        "Assigned to carla",
        "Kettle expert",
    )

    post(client, "assign", case, {"assignee": "", "reason": "Back to the pool"})

    case.refresh_from_db()
    assert case.assignee is None
    assert case.events.filter(kind=CaseEvent.Kind.ASSIGN).last().detail == "Unassigned"


# --- Split and merge --------------------------------------------------------------------------


def test_a_new_question_in_an_old_thread_is_split_into_a_case_of_its_own(
    case, replying, receive, agent
):
    first = case.messages.get()
    question = mail(
        subject="Re: Broken kettle",
        body="Also, my toaster burns everything.",
        headers={"In-Reply-To": first.message_id},
    )
    row = receive(replying, question)
    assert case_of(row) == case
    toaster = case.messages.get(inbound=row)

    response = post(
        client_for(agent),
        "split",
        case,
        {"message": toaster.pk, "reason": "Another appliance"},
        follow=True,
    )

    toaster.refresh_from_db()
    new = toaster.case
    assert new != case
    assert f"The message is now case #{new.pk}." in response.text
    assert list(case.messages.all()) == [first]
    assert (new.mailbox, new.contact, new.address) == (case.mailbox, case.contact, case.address)
    case.refresh_from_db()
    assert case.last_message_at == first.date
    assert case.events.get().detail == (
        f"“Re: Broken kettle” from carol@example.org split out into case #{new.pk}"
    )
    assert new.events.get().reason == "Another appliance"

    refused = post(
        client_for(agent), "split", case, {"message": first.pk, "reason": "x"}, follow=True
    )
    assert "This is the case&#x27;s only message" in refused.text
    assert list(case.messages.all()) == [first]


def test_two_cases_of_a_customer_are_merged_and_the_source_points_at_the_target(
    case, replying, receive, agent, channel
):
    other = case_of(receive(replying, mail(subject="Kettle, again")))
    task = Task.objects.create(case=other, title="Check the warranty")
    client = client_for(agent)

    response = post(
        client, "merge", other, {"target": case.pk, "reason": "Same kettle"}, follow=True
    )

    assert f"Case #{other.pk} merged into this one." in response.text
    other.refresh_from_db()
    assert (other.merged_into, other.state) == (case, Case.State.SOLVED)
    assert case.messages.count() == 2
    assert other.messages.count() == 0
    task.refresh_from_db()
    assert task.case == case
    assert other.events.get().detail == f"Merged into case #{case.pk}"
    assert case.events.get().detail == f"Case #{other.pk} merged into this one"
    assert {e.reason for e in CaseEvent.objects.filter(kind="merge")} == {"Same kettle"}

    elsewhere = channel()
    foreign = case_of(receive(elsewhere, mail(subject="Sales question")))
    refused = post(client, "merge", case, {"target": foreign.pk, "reason": "x"}, follow=True)
    assert f"There is no case #{foreign.pk} on this channel." in refused.text
    assert case.messages.count() == 2
    foreign.refresh_from_db()
    assert (foreign.merged_into, foreign.messages.filter(direction="in").count()) == (None, 1)


# --- Tasks ------------------------------------------------------------------------------------


def test_the_agent_creates_a_task_and_marks_it_done(case, agent):
    client = client_for(agent)

    response = post(
        client,
        "task_add",
        case,
        {"title": "Order a new kettle", "description": "Model K2"},
        follow=True,
    )

    assert "Task “Order a new kettle” created" in response.text
    task = case.tasks.get()
    assert re.search(rf'id="task-{task.pk}".*?Order a new kettle.*?Created', response.text, re.S)

    done = client.post(reverse("cases:task_done", args=[task.pk]), follow=True)

    task.refresh_from_db()
    assert task.state == Task.State.DONE
    assert "is done." in done.text


# --- Who may --------------------------------------------------------------------------------


def action_posts(case: Case, agent: User) -> list[tuple[str, int, dict]]:
    """Every action URL with well-formed data."""
    message = case.messages.get()
    task = Task.objects.create(case=case, title="Call back")
    text = {"from_address": case.mailbox.email_address, "to": "carol@example.org", "text": "Hi"}
    return [
        ("reply", case.pk, text),
        ("state_set", case.pk, {"state": "solved", "reason": "x"}),
        ("assign", case.pk, {"assignee": agent.pk}),
        ("split", case.pk, {"message": message.pk, "reason": "x"}),
        ("merge", case.pk, {"target": case.pk, "reason": "x"}),
        ("task_add", case.pk, {"title": "Something"}),
        ("task_done", task.pk, {}),
    ]


def test_an_outsider_gets_404_on_every_action_and_nothing_changes(case, agent, outsider):
    client = client_for(outsider)

    answers = {
        name: post(client, name, pk, data).status_code
        for name, pk, data in action_posts(case, agent)
    }

    assert set(answers.values()) == {404}, answers
    case.refresh_from_db()
    assert (case.state, case.assignee, case.events.count()) == (Case.State.NEW, None, 0)
    assert not OutboundMessage.objects.exists()
    assert case.tasks.get().state == Task.State.OPEN


def test_every_action_needs_the_csrf_token(case, agent):
    client = client_for(agent, enforce_csrf_checks=True)

    answers = {
        name: post(client, name, pk, data).status_code
        for name, pk, data in action_posts(case, agent)
    }

    assert set(answers.values()) == {403}, answers
    assert not OutboundMessage.objects.exists()
    assert case.events.count() == 0
