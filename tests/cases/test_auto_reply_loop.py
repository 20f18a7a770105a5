"""Automatic replies cannot loop: acknowledgements go out through the SMTP fixture and are
delivered back into Dovecot, and the Auto-Submitted header or the hourly cap ends the round."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from cases.models import AutoReply, Case
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
from pollers.outbox import outbox_send_due
from tests.cases.conftest import mail
from tests.cases.test_confirm import sending_through

pytestmark = pytest.mark.django_db
MAX_ROUNDS = 10  # far more than either loop may take


@pytest.fixture
def network(smtp, dovecot, poll):
    """run(channels, robot=None) -> rounds: send each channel's outbox through the SMTP fixture,
    deliver what the fixture accepted into the Dovecot folder of the channel it is addressed to
    (or hand it to `robot`, an outside responder, whose answer is delivered the same way), poll,
    and repeat until no mail moves."""

    def run(channels: list[Mailbox], robot=None) -> int:
        by_address = {c.email_address: c for c in channels}
        handled = 0
        for rounds in range(MAX_ROUNDS):
            for mailbox in channels:
                outbox_send_due(mailbox_id=mailbox.pk)
            accepted = smtp.messages[handled:]
            handled += len(accepted)
            if not accepted:
                return rounds
            for received in accepted:
                for to in received.rcpt_tos:
                    if to in by_address:
                        _arrive(by_address[to], received.raw)
                    elif robot is not None:
                        target, answer = robot(received.message)
                        _arrive(by_address[target], answer)
        raise AssertionError(f"the mail was still looping after {MAX_ROUNDS} rounds")

    def _arrive(mailbox: Mailbox, raw: bytes) -> None:
        dovecot.deliver(mailbox.mail_user, raw)
        assert poll(mailbox).stored == 1

    return run


def test_two_channels_acknowledging_each_other_stop_after_one_round(
    channel, smtp, receive, network
):
    first = sending_through(smtp, channel(name="First"))
    second = sending_through(smtp, channel(name="Second"))
    # A person writes to the first channel from the second channel's mailbox.
    receive(first, mail(sender=second.email_address, to=first.email_address))

    rounds = network([first, second])

    assert rounds == 1  # the acknowledgement went out, arrived, and nothing answered it
    (ack,) = smtp.messages
    assert ack.rcpt_tos == (second.email_address,)
    assert ack.message["Auto-Submitted"] == "auto-replied"
    received = InboundMessage.objects.get(mailbox=second)
    assert received.message_id == ack.message["Message-ID"]
    assert "no acknowledgement: the message is automatic (Auto-Submitted: auto-replied)" in (
        received.outcome_reason
    )
    assert Case.objects.get(mailbox=second).address == first.email_address
    assert not OutboundMessage.objects.filter(mailbox=second).exists()


def test_a_responder_ignoring_auto_submitted_is_stopped_by_the_hourly_cap(
    channel, smtp, receive, network
):
    support = sending_through(smtp, channel(name="Support"))
    answered = []

    def careless_robot(message: EmailMessage) -> tuple[str, bytes]:
        """An out-of-office reply that drops every header RFC 3834 asks for, and threading."""
        answered.append(message["Subject"])
        return support.email_address, mail(
            sender="robot@example.net", to=support.email_address, subject="I am away"
        )

    receive(support, mail(sender="robot@example.net", subject="Hello"))

    rounds = network([support], robot=careless_robot)

    acks = OutboundMessage.objects.filter(
        mailbox=support, kind=OutboundMessage.Kind.ACKNOWLEDGEMENT
    )
    assert acks.count() == len(answered) == rounds == 3
    assert AutoReply.objects.filter(address="robot@example.net").count() == 3
    assert Case.objects.filter(mailbox=support).count() == 4  # every mail kept, on a case
    last = InboundMessage.objects.filter(mailbox=support).latest("pk")
    assert "3 automatic replies already went to this address in the last hour" in (
        last.outcome_reason
    )
