"""What the administrator sees and does about mail out: the outbox, resend, test mail."""

from __future__ import annotations

import pytest
from django.urls import reverse

from channels_app.celery import app as celery_app
from mailboxes.models import Mailbox, OutboundMessage
from pollers.outbox import outbox_send_due
from tests.pollers.conftest import enqueue

pytestmark = pytest.mark.django_db
State = OutboundMessage.State
OUTBOX = reverse("admin:mailboxes_outboundmessage_changelist")


@pytest.fixture
def eager_tasks():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_the_outbox_shows_a_channels_mail_with_state_attempts_and_last_error(
    admin_client, sender, smtp
):
    mailbox = sender()
    enqueue(mailbox, subject="Delivered fine")
    outbox_send_due(mailbox_id=mailbox.pk)
    smtp.fail_next(stage="DATA", code=550, text="5.7.1 Rejected as spam")
    enqueue(mailbox, subject="Refused one")
    outbox_send_due(mailbox_id=mailbox.pk)
    other = sender(name="Other channel", email_address="other@example.test")
    enqueue(other, subject="Not this channel")

    page = admin_client.get(OUTBOX, {"mailbox__id__exact": mailbox.pk}).content.decode()

    assert "Delivered fine" in page and "Refused one" in page
    assert "Not this channel" not in page
    assert "&#9679; Sent" in page and "&#9679; Failed" in page
    assert "550 5.7.1 Rejected as spam" in page
    assert '<td class="field-attempts">1</td>' in page


def test_the_channel_page_links_to_its_outbox_and_to_send_test_mail(admin_client, sender):
    mailbox = sender()
    page = admin_client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]))
    text = page.content.decode()
    assert f"{OUTBOX}?mailbox__id__exact={mailbox.pk}" in text
    assert reverse("admin:mailboxes_mailbox_send_test_mail", args=[mailbox.pk]) in text


def test_resend_sends_a_failed_message_again_and_leaves_sent_ones_alone(
    admin_client, sender, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    mailbox = sender()
    sent = enqueue(mailbox, subject="Already sent")
    outbox_send_due(mailbox_id=mailbox.pk)
    smtp.fail_next(stage="DATA", code=554, text="5.0.0 Not now")
    failed = enqueue(mailbox, subject="Try me again")
    outbox_send_due(mailbox_id=mailbox.pk)
    smtp.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            OUTBOX,
            {"action": "resend", "_selected_action": [sent.pk, failed.pk]},
            follow=True,
        )

    assert "1 message(s) queued again. 1 not failed, left alone." in response.content.decode()
    failed.refresh_from_db()
    assert failed.state == State.SENT
    [received] = smtp.wait_for(1)
    assert failed.message_id.encode() in received.raw


def test_send_test_mail_reaches_the_server_and_says_so(admin_client, admin_user, sender, smtp):
    mailbox = sender()
    url = reverse("admin:mailboxes_mailbox_send_test_mail", args=[mailbox.pk])
    assert admin_user.email in admin_client.get(url).content.decode()  # offered as the default

    response = admin_client.post(url, {"to": "admin@example.test"}, follow=True)

    text = response.content.decode()
    assert "Test mail sent to admin@example.test: the server accepted it" in text
    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == ("admin@example.test",)
    assert b"Postroom test mail from" in received.raw
    row = OutboundMessage.objects.get(mailbox=mailbox)
    assert row.kind == OutboundMessage.Kind.TEST and row.state == State.SENT


def test_send_test_mail_shows_why_it_failed(admin_client, sender, smtp):
    mailbox = sender(smtp_password="wrong")
    url = reverse("admin:mailboxes_mailbox_send_test_mail", args=[mailbox.pk])

    response = admin_client.post(url, {"to": "admin@example.test"})

    text = response.content.decode()
    assert response.status_code == 200  # still on the form, to try again
    assert "The test mail to admin@example.test was not sent." in text
    assert "refused the username or password" in text
    assert "wrong" not in text.split("was not sent.", 1)[1].split("</li>", 1)[0]
    assert smtp.messages == []
    assert OutboundMessage.objects.get(mailbox=mailbox).state == State.FAILED


def test_send_test_mail_says_when_the_server_is_down(admin_client, sender):
    from tests.servers.net import free_port

    mailbox = sender(smtp_port=free_port())
    url = reverse("admin:mailboxes_mailbox_send_test_mail", args=[mailbox.pk])

    response = admin_client.post(url, {"to": "admin@example.test"})

    assert "Nothing answers on 127.0.0.1 port" in response.content.decode()


def test_a_paused_outbox_shows_red_on_the_channel_list_and_can_be_resumed(
    admin_client, sender, smtp, mail_user, eager_tasks, django_capture_on_commit_callbacks
):
    mailbox = sender(smtp_password="wrong")
    row = enqueue(mailbox)
    outbox_send_due(mailbox_id=mailbox.pk)

    listing = admin_client.get(reverse("admin:mailboxes_mailbox_changelist")).content.decode()
    assert "color:#d93025" in listing and "Outbox paused" in listing

    Mailbox.objects.filter(pk=mailbox.pk).update(smtp_password=mail_user.password)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:mailboxes_mailbox_changelist"),
            {"action": "resume_outbox", "_selected_action": [mailbox.pk]},
            follow=True,
        )

    assert f"{mailbox.name}: outbox resumed." in response.content.decode()
    mailbox.refresh_from_db()
    row.refresh_from_db()
    assert not mailbox.outbox_paused and row.state == State.SENT
