"""An administrator connects a mailbox in the admin; saving tries the login (seed 003)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from channels_app.celery import app as celery_app
from mailboxes.models import Mailbox, OutboundMessage
from pollers.outbox import outbox_send_due
from tests.pollers.conftest import enqueue

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:mailboxes_mailbox_add")


def test_it_saves_a_channel_that_logs_in_and_shows_the_message_count(
    admin_client, channel_data, mail_user, deliver_samples
):
    deliver_samples(mail_user, 3)
    response = admin_client.post(ADD_URL, channel_data(), follow=True)

    mailbox = Mailbox.objects.get()
    assert mailbox.status == Mailbox.Status.OK
    assert mailbox.last_message_count == 3
    assert mailbox.enabled
    assert "3 messages in INBOX" in response.content.decode()


def test_it_saves_a_pop3_channel_over_starttls(
    admin_client, channel_data, dovecot, mail_user, deliver_samples
):
    deliver_samples(mail_user, 2)
    data = channel_data(
        protocol="pop3", incoming_port=str(dovecot.ports.pop3), incoming_security="starttls"
    )
    admin_client.post(ADD_URL, data)
    assert Mailbox.objects.get().last_message_count == 2


def test_a_wrong_password_sends_the_form_back_with_the_reason(admin_client, channel_data):
    response = admin_client.post(ADD_URL, channel_data(password="not-it"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "refused the username or password" in page
    assert "Save anyway, offline" in page
    assert not Mailbox.objects.exists()


def test_save_anyway_keeps_a_failing_channel_offline_and_red(admin_client, channel_data):
    admin_client.post(ADD_URL, channel_data(password="not-it", save_anyway_offline="on"))

    mailbox = Mailbox.objects.get()
    assert not mailbox.enabled
    assert mailbox.status == Mailbox.Status.ERROR
    assert "refused the username or password" in mailbox.last_error
    assert mailbox.last_error_at is not None


def test_a_closed_port_is_reported_in_words(admin_client, channel_data):
    from tests.servers.net import free_port

    response = admin_client.post(ADD_URL, channel_data(incoming_port=str(free_port())))
    assert "Nothing answers" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_a_self_signed_certificate_is_refused_unless_trusted(admin_client, channel_data):
    response = admin_client.post(ADD_URL, channel_data(trust_self_signed=None))
    assert "not trusted" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_an_offline_channel_is_saved_without_trying_the_login(admin_client, channel_data):
    admin_client.post(ADD_URL, channel_data(enabled=None, password="not-it"))
    mailbox = Mailbox.objects.get()
    assert mailbox.status == Mailbox.Status.UNCHECKED
    assert not mailbox.enabled


def test_the_username_defaults_to_the_address(admin_client, channel_data, mail_user):
    admin_client.post(ADD_URL, channel_data(username="", enabled=None))
    assert Mailbox.objects.get().username == mail_user.address


def test_aliases_are_added_on_the_channel_page(admin_client, channel_data):
    data = channel_data(
        **{
            "aliases-TOTAL_FORMS": "2",
            "aliases-0-address": "billing@example.test",
            "aliases-0-display_name": "Billing",
            "aliases-1-address": "help@example.test",
            "aliases-1-display_name": "",
        }
    )
    admin_client.post(ADD_URL, data)
    aliases = Mailbox.objects.get().aliases.order_by("address")
    assert [str(a) for a in aliases] == ["Billing <billing@example.test>", "help@example.test"]


def test_an_alias_cannot_be_the_channel_address(admin_client, channel_data, mail_user):
    admin_client.post(ADD_URL, channel_data(enabled=None))
    mailbox = Mailbox.objects.get()
    change = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    response = admin_client.post(
        change,
        channel_data(
            enabled=None,
            **{
                "aliases-TOTAL_FORMS": "1",
                "aliases-0-address": mail_user.address.upper(),
            },
        ),
    )
    assert "the channel&#x27;s own address" in response.content.decode()
    assert not mailbox.aliases.exists()


def test_the_list_shows_status_colour_channel_id_and_filters(admin_client, channel_data):
    admin_client.post(ADD_URL, channel_data())
    mailbox = Mailbox.objects.get()
    page = admin_client.get(reverse("admin:mailboxes_mailbox_changelist")).content.decode()
    assert mailbox.channel_id in page
    assert "Working" in page and "#1e8e3e" in page
    filtered = admin_client.get(reverse("admin:mailboxes_mailbox_changelist") + "?status=error")
    assert mailbox.channel_id not in filtered.content.decode()


def test_the_test_connection_button_records_the_outcome(
    admin_client, channel_data, mail_user, deliver_samples
):
    admin_client.post(ADD_URL, channel_data())
    mailbox = Mailbox.objects.get()
    deliver_samples(mail_user, 4)

    url = reverse("admin:mailboxes_mailbox_test_connection", args=[mailbox.pk])
    response = admin_client.post(url, follow=True)
    assert "4 messages in INBOX" in response.content.decode()
    mailbox.refresh_from_db()
    assert mailbox.last_message_count == 4
    assert admin_client.get(url).status_code == 405  # a GET (a link scanner) changes nothing


def test_taking_a_channel_online_requires_a_passing_test(admin_client, channel_data):
    admin_client.post(ADD_URL, channel_data(enabled=None, password="not-it"))
    mailbox = Mailbox.objects.get()
    changelist = reverse("admin:mailboxes_mailbox_changelist")

    admin_client.post(changelist, {"action": "take_online", "_selected_action": [mailbox.pk]})
    mailbox.refresh_from_db()
    assert not mailbox.enabled
    assert mailbox.status == Mailbox.Status.ERROR

    Mailbox.objects.filter(pk=mailbox.pk).update(password=channel_data()["password"])
    admin_client.post(changelist, {"action": "take_online", "_selected_action": [mailbox.pk]})
    mailbox.refresh_from_db()
    assert mailbox.enabled and mailbox.status == Mailbox.Status.OK

    admin_client.post(changelist, {"action": "take_offline", "_selected_action": [mailbox.pk]})
    mailbox.refresh_from_db()
    assert not mailbox.enabled


def test_delete_names_the_channel_and_counts_what_it_holds(admin_client, channel_data):
    admin_client.post(
        ADD_URL,
        channel_data(
            enabled=None,
            **{
                "aliases-TOTAL_FORMS": "2",
                "aliases-0-address": "a1@example.test",
                "aliases-1-address": "a2@example.test",
            },
        ),
    )
    mailbox = Mailbox.objects.get()
    url = reverse("admin:mailboxes_mailbox_delete", args=[mailbox.pk])

    page = admin_client.get(url).content.decode()
    assert mailbox.name in page
    assert "2 aliases" in page
    assert "a1@example.test" not in page  # a count, not Django's list of every row

    admin_client.post(url, {"post": "yes"})
    assert not Mailbox.objects.exists()


def test_mending_the_outgoing_password_resumes_a_paused_outbox_at_once(
    admin_client, channel_data, mail_user, smtp, django_capture_on_commit_callbacks
):
    admin_client.post(ADD_URL, channel_data())
    mailbox = Mailbox.objects.get()
    Mailbox.objects.filter(pk=mailbox.pk).update(smtp_password="wrong")
    row = enqueue(mailbox)
    assert outbox_send_due(mailbox_id=mailbox.pk).paused

    change = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    celery_app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                change, channel_data(smtp_password=mail_user.password), follow=True
            )
    finally:
        celery_app.conf.task_always_eager = False

    assert "outbox resumed" in response.content.decode()
    mailbox.refresh_from_db()
    row.refresh_from_db()
    assert not mailbox.outbox_paused and row.state == OutboundMessage.State.SENT
    assert len(smtp.wait_for(1)) == 1
