"""Round-trip probes: a channel mails itself through its real outgoing server, the mail comes
back in through the real incoming one, and the time is recorded; a probe that never comes
turns the channel amber, then red, with one mail to the administrators."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from cases.models import Case
from mailboxes.forms import MailboxForm
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
from pollers.round_trip import (
    HEADER,
    round_trip_send,
    round_trips_claim_due,
    round_trips_expire,
)
from tests.cases.conftest import ACK, mail

pytestmark = pytest.mark.django_db
RoundTrip = Mailbox.RoundTrip


@pytest.fixture
def probed(sender, poll):
    """make(**fields): a connected channel with probes on, acknowledging new cases."""

    def make(**fields) -> Mailbox:
        values = {"round_trip_enabled": True, "auto_ack_template": ACK, "copy_to_sent": False}
        mailbox = sender(**{**values, **fields})
        poll(mailbox)  # connects: the cursor is set, probes may start
        return mailbox

    return make


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser(
        "ada", "ada@example.test", "correct horse battery staple"
    )


def relay(smtp, dovecot, user, count: int = 1):
    """What the MTA behind the SMTP server does: deliver the last accepted message into the
    recipient's mailbox."""
    message = smtp.wait_for(count)[-1]
    dovecot.deliver(user, message.raw)
    return message


def test_it_measures_a_probe_that_comes_back_and_removes_it(probed, poll, smtp, dovecot, mail_user):
    mailbox = probed()
    assert round_trips_claim_due() == [mailbox.pk]
    assert round_trip_send(mailbox_id=mailbox.pk)

    probe = relay(smtp, dovecot, mail_user)
    assert probe.rcpt_tos == (mailbox.email_address,)
    assert probe.message[HEADER]
    assert poll(mailbox).stored == 1

    mailbox.refresh_from_db()
    assert mailbox.round_trip_state == RoundTrip.OK
    assert mailbox.round_trip_last_ms is not None
    assert mailbox.round_trip_last_ok_at is not None
    assert mailbox.round_trip_sent_at is None
    assert "came back in" in mailbox.round_trip_detail
    # Gone from the server and the ledger; no case, no acknowledgement.
    assert dovecot.folder_uids(mail_user) == []
    assert not InboundMessage.objects.filter(mailbox=mailbox).exists()
    assert not Case.objects.exists()
    assert not OutboundMessage.objects.exists()
    assert len(smtp.messages) == 1


def test_a_moved_probe_is_removed_from_the_folder_it_was_moved_to(
    probed, poll, smtp, dovecot, mail_user
):
    dovecot.create_folder(mail_user, "Done")
    mailbox = probed(after_import=Mailbox.AfterImport.MOVE, move_to_folder="Done")
    round_trip_send(mailbox_id=mailbox.pk)
    relay(smtp, dovecot, mail_user)
    poll(mailbox)

    mailbox.refresh_from_db()
    assert mailbox.round_trip_state == RoundTrip.OK
    assert dovecot.folder_uids(mail_user) == []
    assert dovecot.folder_uids(mail_user, "Done") == []


def test_a_pop3_probe_is_removed_from_the_maildrop(probed, poll, smtp, dovecot, mail_user):
    mailbox = probed(protocol="pop3", incoming_port=dovecot.ports.pop3s)
    dovecot.deliver(mail_user, mail(to=mailbox.email_address))  # a customer's, stays
    round_trip_send(mailbox_id=mailbox.pk)
    relay(smtp, dovecot, mail_user)
    assert poll(mailbox).stored == 2

    mailbox.refresh_from_db()
    assert mailbox.round_trip_state == RoundTrip.OK
    assert len(dovecot.folder_uids(mail_user)) == 1
    assert InboundMessage.objects.get(mailbox=mailbox).outcome == InboundMessage.Outcome.PROCESSED
    assert poll(mailbox).stored == 0  # the probe is not fetched again


def test_a_customer_mail_that_only_names_the_header_becomes_a_case(
    probed, poll, dovecot, mail_user
):
    mailbox = probed()
    forged = mail(to=mailbox.email_address, headers={HEADER: f"{mailbox.channel_id}.1.00ff"})
    dovecot.deliver(mail_user, forged)
    poll(mailbox)

    row = InboundMessage.objects.get(mailbox=mailbox)
    assert row.outcome == InboundMessage.Outcome.PROCESSED
    assert Case.objects.filter(mailbox=mailbox).count() == 1


def test_a_probe_that_never_arrives_turns_amber_then_red_and_mails_administrators_once(
    probed,
    poll,
    smtp,
    dovecot,
    mail_user,
    admin_user,
    mailoutbox,
    django_capture_on_commit_callbacks,
):
    mailbox = probed(round_trip_limit=60)
    later = timezone.now()
    for missed in (1, 2, 3):
        assert round_trip_send(mailbox_id=mailbox.pk, now=later)
        smtp.wait_for(missed)  # accepted by the server, and lost on the way
        later += timedelta(seconds=61)
        with django_capture_on_commit_callbacks(execute=True):  # as in a task: no outer atomic
            assert round_trips_expire(now=later) == [mailbox.pk]
        mailbox.refresh_from_db()
        assert mailbox.round_trip_failures == missed
        if missed == 1:
            assert mailbox.round_trip_state == RoundTrip.LATE
            assert mailbox.health == Mailbox.Status.WARNING
            assert mailoutbox == []

    assert mailbox.round_trip_state == RoundTrip.FAILING
    assert mailbox.health == Mailbox.Status.ERROR
    assert "did not arrive within 60 s" in mailbox.round_trip_detail
    assert len(mailoutbox) == 1
    alert = mailoutbox[0]
    assert alert.to == [admin_user.email]
    assert mailbox.email_address in alert.subject
    assert f"/admin/mailboxes/mailbox/{mailbox.pk}/change/" in alert.body

    # The next probe gets through: green again, one mail saying so, and a later outage mails
    # again.
    round_trip_send(mailbox_id=mailbox.pk)
    relay(smtp, dovecot, mail_user, count=4)
    with django_capture_on_commit_callbacks(execute=True):
        poll(mailbox)
    mailbox.refresh_from_db()
    assert mailbox.round_trip_state == RoundTrip.OK
    assert mailbox.round_trip_failures == 0
    assert mailbox.round_trip_alerted_at is None
    assert mailbox.health == Mailbox.Status.OK
    assert len(mailoutbox) == 2
    assert "arriving again" in mailoutbox[1].subject and "came back in" in mailoutbox[1].body


def test_a_probe_the_outgoing_server_refuses_counts_as_missed(probed, smtp):
    mailbox = probed()
    smtp.fail_next("MAIL", 550, "5.7.1 Sender not allowed")
    assert not round_trip_send(mailbox_id=mailbox.pk)

    mailbox.refresh_from_db()
    assert mailbox.round_trip_state == RoundTrip.LATE
    assert "did not take the probe" in mailbox.round_trip_detail
    assert "Sender not allowed" in mailbox.round_trip_detail
    assert mailbox.round_trip_sent_at is None


def test_channels_without_probes_or_not_yet_connected_are_not_probed(sender, make_channel):
    sender(round_trip_enabled=False)
    sender(round_trip_enabled=True, email_address="new@example.test", name="New")  # no poll yet
    assert round_trips_claim_due() == []


def test_the_channel_pages_show_a_missed_probe(probed, smtp, admin_client):
    mailbox = probed(round_trip_limit=60, name="Support")
    round_trip_send(mailbox_id=mailbox.pk)
    smtp.wait_for(1)
    round_trips_expire(now=timezone.now() + timedelta(seconds=61))

    page = admin_client.get(f"/admin/mailboxes/mailbox/{mailbox.pk}/change/").content.decode()
    assert "Round-trip probe" in page
    assert "Missed" in page
    assert "did not arrive within 60 s" in page
    listing = admin_client.get("/admin/mailboxes/mailbox/").content.decode()
    assert "&#9679; Warning" in listing  # the channel itself logs in fine: amber, not green


def test_the_form_refuses_a_limit_past_the_next_probe(probed):
    mailbox = probed()
    data = {k: v for k, v in model_to_dict(mailbox).items() if v is not None}
    data.update(round_trip_interval=600, round_trip_limit=900, agent_groups=[])

    form = MailboxForm(data=data, instance=mailbox)

    assert not form.is_valid()
    assert "shorter than the interval" in str(form.errors["round_trip_limit"])


def test_an_offline_channel_or_probes_turned_off_leave_the_colour_alone(probed, smtp):
    mailbox = probed(round_trip_limit=60)
    round_trip_send(mailbox_id=mailbox.pk)
    Mailbox.objects.filter(pk=mailbox.pk).update(enabled=False)  # nobody polls it now
    assert round_trips_expire(now=timezone.now() + timedelta(seconds=61)) == []
    mailbox.refresh_from_db()
    assert mailbox.round_trip_failures == 0 and mailbox.round_trip_sent_at is None

    Mailbox.objects.filter(pk=mailbox.pk).update(enabled=True, round_trip_next_at=None)
    round_trip_send(mailbox_id=mailbox.pk)
    round_trips_expire(now=timezone.now() + timedelta(seconds=61))
    mailbox.refresh_from_db()
    assert mailbox.health == Mailbox.Status.WARNING
    Mailbox.objects.filter(pk=mailbox.pk).update(round_trip_enabled=False)
    mailbox.refresh_from_db()
    assert mailbox.health == Mailbox.Status.OK
