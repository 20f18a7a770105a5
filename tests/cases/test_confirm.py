"""Unknown senders confirm with a button (a POST) before their mail becomes a case."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from cases.confirmations import confirmations_expire
from cases.models import Case, Confirmation, Contact
from cases.services import inbound_replay
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
from pollers.outbox import outbox_send_due
from tests.cases.conftest import mail

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome


def sending_through(smtp, mailbox: Mailbox) -> Mailbox:
    """Point a test channel's outgoing side at the SMTP fixture (STARTTLS, with a login)."""
    user = mailbox.mail_user
    smtp.add_user(user.address, user.password)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        smtp_host="127.0.0.1",
        smtp_port=smtp.starttls_port,
        smtp_security="starttls",
        smtp_username=user.address,
    )
    return mailbox


@pytest.fixture
def guarded(channel, smtp):
    """A channel confirming unknown senders, sending through the SMTP fixture."""
    return sending_through(smtp, channel(confirm_unknown_senders=True))


def confirmation_link(smtp, address: str) -> str:
    """The link in the confirmation mail the SMTP fixture received for `address`."""
    (received,) = [m for m in smtp.messages if address in m.rcpt_tos]
    message = received.message
    assert message["Auto-Submitted"] == "auto-replied"
    text = message.get_body(("plain",)).get_content()
    return re.search(r"https?://\S+/confirm/\S+/", text).group(0)


def test_a_held_message_becomes_a_case_when_the_sender_presses_confirm(
    guarded, receive, smtp, client
):
    row = receive(guarded, mail())
    outbox_send_due(mailbox_id=guarded.pk)
    link = confirmation_link(smtp, "carol@example.org")
    path = link.split("://", 1)[1].split("/", 1)[1]

    row.refresh_from_db()
    assert row.outcome == Outcome.HELD
    assert "confirmation asked by mail" in row.outcome_reason
    page = client.get(f"/{path}")
    assert page.status_code == 200
    assert b'<form method="post">' in page.content
    assert not Case.objects.exists()  # a GET (a link scanner) confirms nothing

    done = client.post(f"/{path}")

    assert b"Thank you" in done.content
    row.refresh_from_db()
    case = Case.objects.get(pk=row.result["case"])
    assert row.outcome == Outcome.PROCESSED
    assert row.outcome_reason.startswith(f"New case #{case.reference}, after the sender confirmed")
    assert Contact.objects.filter(address="carol@example.org").exists()
    assert b"<h1>Already confirmed</h1>" in client.post(f"/{path}").content
    assert Case.objects.count() == 1
    assert inbound_replay(message_id=row.pk) == Outcome.PROCESSED
    assert Case.objects.count() == 1


def test_a_made_up_link_confirms_nothing(guarded, receive, client):
    receive(guarded, mail())

    assert client.post("/confirm/not-a-real-token/").status_code == 404
    assert not Case.objects.exists()


def test_the_confirmation_mail_obeys_the_hourly_cap_and_is_never_sent_to_robots(guarded, receive):
    receive(
        guarded, mail(sender="alerts@example.org", headers={"Auto-Submitted": "auto-generated"})
    )
    robot = InboundMessage.objects.filter(mailbox=guarded).latest("pk")

    assert robot.outcome == Outcome.HELD
    assert "no confirmation mail: the message is automatic" in robot.outcome_reason
    for _ in range(4):
        receive(guarded, mail())
    kinds = OutboundMessage.objects.filter(mailbox=guarded, recipients=["carol@example.org"])
    assert kinds.count() == 3


def test_unconfirmed_messages_expire_kept_and_visible_with_the_reason(guarded, receive, client):
    row = receive(guarded, mail())
    Confirmation.objects.update(expires_at=timezone.now())

    assert confirmations_expire() == 1

    row.refresh_from_db()
    assert row.outcome == Outcome.IGNORED
    assert row.outcome_reason.startswith("Kept, no case: the sender did not confirm within 72")
    assert row.raw_bytes()
    assert not Case.objects.exists()


def test_confirming_once_releases_every_message_the_sender_had_held(guarded, receive, smtp, client):
    first = receive(guarded, mail(subject="Broken kettle"))
    second = receive(guarded, mail(subject="Also the toaster"))
    third = receive(
        guarded, mail(subject="Kettle photo", headers={"In-Reply-To": first.message_id})
    )
    other = receive(guarded, mail(sender="dave@example.org", subject="Not Carol"))
    outbox_send_due(mailbox_id=guarded.pk)
    links = [
        re.search(r"/confirm/\S+/", m.message.get_body(("plain",)).get_content()).group(0)
        for m in smtp.messages
        if "carol@example.org" in m.rcpt_tos
    ]
    assert len(links) == 3

    client.post(links[1])  # the second mail's link: all three are released

    for row in (first, second, third, other):
        row.refresh_from_db()
    assert [r.outcome for r in (first, second, third)] == [Outcome.PROCESSED] * 3
    assert other.outcome == Outcome.HELD  # another sender's mail waits for their own click
    kettle = Case.objects.get(pk=first.result["case"])
    toaster = Case.objects.get(pk=second.result["case"])
    assert first.outcome_reason.startswith(f"New case #{kettle.reference}, after the sender")
    assert kettle.pk < toaster.pk  # opened in the order the mail arrived
    assert third.result["case"] == kettle.pk  # it answered the first mail: same case
    assert third.outcome_reason.endswith("released, after the sender confirmed")
    assert [m.subject for m in kettle.messages.filter(direction="in")] == [
        "Broken kettle",
        "Kettle photo",
    ]
    assert b"Already confirmed" in client.post(links[2]).content
    assert Case.objects.count() == 2
