"""The refusal and size-notice mails: the channel's own words or a built-in text, sent through
the SMTP fixture under the automatic-reply rules."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cases.models import AutoReply, Case, CaseEvent
from cases.services import inbound_replay
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
from pollers.outbox import outbox_send_due
from tests.cases.conftest import case_of, mail
from tests.cases.test_confirm import sending_through
from tests.mailboxes.conftest import channel_data  # noqa: F401

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome
Kind = AutoReply.Kind
CAP = 4000
BIG = "My kettle does not boil. " * 400  # 10 kB: over CAP


@pytest.fixture
def sending(channel, smtp):
    """make(**fields): a channel sending through the SMTP fixture."""
    return lambda **fields: sending_through(smtp, channel(**fields))


def delivered(smtp, mailbox: Mailbox, to: str) -> list[str]:
    """Send the channel's outbox; the plain text of each mail the SMTP fixture got for `to`."""
    outbox_send_due(mailbox_id=mailbox.pk)
    return [m.message.get_body(("plain",)).get_content() for m in smtp.messages if to in m.rcpt_tos]


def test_the_refusal_uses_the_channels_template(sending, receive, smtp):
    template = (
        "Sorry {{ contact.name }}, {{ channel.name }} takes no new requests (“{{ subject }}”)."
    )
    support = sending(name="Kettles", allow_new_case=False, refusal_template=template)

    row = receive(support, mail(subject="Tea & biscuits"))

    (text,) = delivered(smtp, support, "carol@example.org")
    assert "Sorry Carol Customer, Kettles takes no new requests (“Tea & biscuits”)." in text
    row.refresh_from_db()
    assert row.outcome == Outcome.IGNORED
    assert AutoReply.objects.get().kind == Kind.REFUSAL


def test_a_stored_refusal_template_that_does_not_compile_falls_back_to_the_built_in_text(
    sending, receive, smtp
):
    support = sending(allow_new_case=False, refusal_template="Sorry {% if %}")

    receive(support, mail())

    (text,) = delivered(smtp, support, "carol@example.org")
    assert "does not open new requests at this address" in text


@pytest.mark.parametrize("field", ["refusal_template", "size_notice_template"])
def test_the_channel_form_refuses_a_template_that_does_not_compile(
    admin_client,
    channel_data,  # noqa: F811
    field,
):
    response = admin_client.post(
        reverse("admin:mailboxes_mailbox_add"), channel_data(**{field: "Hi {% if %}"})
    )

    assert "This template does not compile" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_a_message_over_the_size_cap_gets_a_size_notice_noted_on_its_case(sending, receive, smtp):
    support = sending(max_message_size=CAP)

    row = receive(support, mail(subject="Photos of the kettle", body=BIG))

    case = case_of(row)
    assert row.truncated
    assert "acknowledgement sent); size notice sent" in row.outcome_reason
    ack, notice = delivered(smtp, support, "carol@example.org")
    assert "more than the 3.9\xa0KB this address accepts" in notice
    assert f"It is case [#{case.reference}]" in notice
    assert "Photos of the kettle" in notice
    assert [a.kind for a in AutoReply.objects.order_by("pk")] == [
        Kind.ACKNOWLEDGEMENT,
        Kind.SIZE_NOTICE,
    ]
    assert [m.direction for m in case.messages.all()] == ["in", "out", "out"]
    (event,) = CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.NOTE)
    assert event.detail.startswith("A message from carol@example.org was over the size cap")

    assert inbound_replay(message_id=row.pk) == Outcome.PROCESSED
    assert OutboundMessage.objects.filter(mailbox=support).count() == 2


def test_the_size_notice_uses_the_channels_template_and_goes_on_a_reply_too(sending, receive, smtp):
    support = sending(
        max_message_size=CAP, size_notice_template="Too big: {{ size }} > {{ limit }} bytes."
    )
    case = case_of(receive(support, mail()))
    ack = OutboundMessage.objects.get(mailbox=support)

    row = receive(support, mail(body=BIG, headers={"In-Reply-To": ack.message_id}))

    assert case_of(row) == case
    texts = delivered(smtp, support, "carol@example.org")
    assert len(texts) == 2
    assert f"Too big: {row.size} > {CAP} bytes." in texts[1]


def test_no_size_notice_to_automatic_mail_or_over_the_hourly_cap(sending, receive, smtp):
    support = sending(max_message_size=CAP)

    robot = receive(
        support,
        mail(sender="alerts@example.org", body=BIG, headers={"Auto-Submitted": "auto-generated"}),
    )
    first = receive(support, mail(subject="One", body=BIG))  # acknowledgement + size notice
    second = receive(support, mail(subject="Two", body=BIG))  # acknowledgement: the third

    robot.refresh_from_db()
    assert "no size notice: the message is automatic" in robot.outcome_reason
    second.refresh_from_db()
    assert "no size notice: 3 automatic replies already went to this address" in (
        second.outcome_reason
    )
    first.refresh_from_db()
    assert "size notice sent" in first.outcome_reason
    assert len(delivered(smtp, support, "carol@example.org")) == 3
    assert not delivered(smtp, support, "alerts@example.org")
    assert Case.objects.filter(mailbox=support).count() == 3  # cut mail still opens its case
