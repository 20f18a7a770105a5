"""What the administrator sees and does about mail in: fetch now, the ledger, replay."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cases.services import inbound_process
from channels_app.celery import app as celery_app
from mailboxes.models import InboundMessage, Mailbox
from mailboxes.storage import Fetched, messages_store
from tests.pollers.conftest import message

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_tasks():
    """Tasks run inline, as a worker would run them, so the outcome is visible at once."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_fetch_now_polls_the_channel_at_once(
    admin_client, dovecot, mail_user, connected, eager_tasks, django_capture_on_commit_callbacks
):
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    url = reverse("admin:mailboxes_mailbox_fetch_now", args=[mailbox.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, follow=True)

    assert "fetching now" in response.content.decode()
    assert InboundMessage.objects.filter(mailbox=mailbox).count() == 1


def test_the_channel_page_says_where_mail_starts_and_what_the_last_poll_did(
    admin_client, dovecot, mail_user, connected, poll
):
    dovecot.deliver(mail_user, message(0))
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    page = admin_client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]))
    text = page.content.decode()
    assert "mail from now on" in text
    assert "stored 1 message(s)" in text


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"protocol": "pop3", "after_import": "seen"}, "POP3 can only leave mail"),
        ({"after_import": "move"}, "Move to folder is required to move imported mail"),
        ({"after_import": "move", "move_to_folder": "inbox"}, "would import it again"),
    ],
)
def test_after_import_rules(admin_client, overrides, error):
    data = {
        "name": "X",
        "email_address": "x@example.test",
        "preset": "generic",
        "listen": "on",
        "protocol": "imap",
        "incoming_host": "mail.example.test",
        "incoming_port": "993",
        "incoming_security": "ssl",
        "password": "p",
        "folder": "INBOX",
        "refresh_interval": "60",
        "server_type": "smtp",
        "smtp_host": "mail.example.test",
        "smtp_port": "587",
        "smtp_security": "starttls",
        "auth_type": "basic",
        "oauth_grant_type": "authorization_code",
        "flow": "create_case",
        "max_message_size": "1000000",
        "after_import": "leave",
        "aliases-TOTAL_FORMS": "0",
        "aliases-INITIAL_FORMS": "0",
        **overrides,
    }
    response = admin_client.post(reverse("admin:mailboxes_mailbox_add"), data)
    assert error in response.content.decode()
    assert not Mailbox.objects.exists()


def test_the_ledger_lists_filters_and_replays(admin_client, make_channel):
    mailbox = make_channel()
    good, empty = messages_store(
        mailbox=mailbox,
        uidvalidity=1,
        fetched=[Fetched(raw=message(1), size=200, uid=1), Fetched(raw=b"", size=0, uid=2)],
    )
    inbound_process(message_id=good.pk)
    inbound_process(message_id=empty.pk)
    changelist = reverse("admin:mailboxes_inboundmessage_changelist")

    page = admin_client.get(changelist).content.decode()
    assert "Carol Customer" in page and "UIDVALIDITY 1 UID 1" in page
    failed = admin_client.get(changelist + "?outcome=failed").content.decode()
    assert "the message is empty" in failed and "Carol Customer" not in failed

    response = admin_client.post(
        changelist, {"action": "replay", "_selected_action": [good.pk, empty.pk]}, follow=True
    )
    assert "Replayed 2 message(s); 1 failed again." in response.content.decode()
    good.refresh_from_db()
    assert good.outcome == InboundMessage.Outcome.PROCESSED and good.attempts == 2


def test_the_ledger_names_sender_and_subject_from_the_moment_mail_is_stored(
    admin_client, make_channel
):
    """Before processing (or when it fails early) the administrator still finds the customer's
    email by who sent it, with encoded words decoded."""
    raw = (
        b"From: =?iso-8859-1?q?J=F6rg_Kunde?= <jorg@example.org>\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9_order?= missing\r\nMessage-ID: <cafe-1@example.org>\r\n"
        b"\r\nWhere is it?\r\n"
    )
    messages_store(
        mailbox=make_channel(), uidvalidity=1, fetched=[Fetched(raw=raw, size=len(raw), uid=1)]
    )
    changelist = reverse("admin:mailboxes_inboundmessage_changelist")

    page = admin_client.get(changelist, {"q": "jorg@example.org"}).content.decode()

    assert "Jörg Kunde" in page and "Café order missing" in page
    assert "Waiting to be processed" in page
