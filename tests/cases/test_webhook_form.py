"""The administrator sets up the webhook flow in the channel form: a URL is required, and one
in a blocked network is refused with a message saying what to do."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox
from tests.mailboxes.conftest import channel_data, loopback_allowed  # noqa: F401

pytestmark = pytest.mark.django_db
ADD_URL = reverse("admin:mailboxes_mailbox_add")


def test_the_webhook_flow_needs_a_url(admin_client, channel_data):  # noqa: F811
    response = admin_client.post(ADD_URL, channel_data(flow="webhook", webhook_url=""))

    assert "Webhook URL is required for the webhook flow." in response.content.decode()
    assert not Mailbox.objects.exists()


def test_a_webhook_url_in_a_blocked_network_is_refused(admin_client, channel_data):  # noqa: F811
    data = channel_data(flow="webhook", webhook_url="http://169.254.169.254/hook")

    page = admin_client.post(ADD_URL, data).content.decode()

    assert "169.254.169.254 is in a blocked network (169.254.0.0/16)." in page
    assert "use the receiver&#x27;s public address" in page
    assert not Mailbox.objects.exists()


def test_a_webhook_channel_is_saved_with_its_secret_kept_hidden(
    admin_client,
    channel_data,  # noqa: F811
    http_sink,
):
    data = channel_data(flow="webhook", webhook_url=http_sink.url(), webhook_secret="s3cret-hook")

    response = admin_client.post(ADD_URL, data)

    assert response.status_code == 302, response.content.decode()[:2000]
    mailbox = Mailbox.objects.get()
    assert (mailbox.flow, mailbox.webhook_secret) == ("webhook", "s3cret-hook")
    page = admin_client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]))
    assert "s3cret-hook" not in page.content.decode()


def test_the_flow_choice_lists_every_registered_flow_with_its_description(admin_client):
    page = admin_client.get(ADD_URL).content.decode()

    for label in ("Create case", "Webhook", "Inbound task queue"):
        assert f">{label}</option>" in page
        assert f"<b>{label}</b>: " in page  # with its description under the choice
    assert "POST a signed JSON summary of the email" in page
