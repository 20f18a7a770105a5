""" "Test connection" must not be a port scanner for the internal network."""

from __future__ import annotations

import pytest
from django.urls import reverse

from channels_app import settings as project_settings
from mailboxes.models import Mailbox

pytestmark = pytest.mark.django_db
ADD_URL = reverse("admin:mailboxes_mailbox_add")


def test_by_default_the_postroom_host_itself_is_refused(admin_client, channel_data, settings):
    settings.POSTROOM_BLOCKED_NETWORKS = project_settings.POSTROOM_BLOCKED_NETWORKS
    response = admin_client.post(ADD_URL, channel_data())
    assert "blocked network" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_the_cloud_metadata_service_is_refused(admin_client, channel_data):
    response = admin_client.post(ADD_URL, channel_data(incoming_host="169.254.169.254"))
    assert "blocked network" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_operators_can_block_private_ranges_too(admin_client, channel_data, settings):
    settings.POSTROOM_BLOCKED_NETWORKS = ["10.0.0.0/8", "127.0.0.0/8"]
    response = admin_client.post(
        ADD_URL, channel_data(smtp_host="10.1.2.3", incoming_host="10.9.9.9")
    )
    page = response.content.decode()
    assert page.count("blocked network") >= 2  # incoming and outgoing both named
