"""An administrator writes the case response template (seed 001) that wraps agents' replies."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox

pytestmark = pytest.mark.django_db
ADD_URL = reverse("admin:mailboxes_mailbox_add")


def test_a_template_that_does_not_compile_is_refused_with_djangos_words(admin_client, channel_data):
    data = channel_data(case_response_template="Hello {% if %}{{ reply }}")

    response = admin_client.post(ADD_URL, data)

    assert "This template does not compile" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_a_good_template_is_saved(admin_client, channel_data):
    template = "Hello {{ contact }},\n\n{{ reply }}\n\n-- {{ channel.from_name }}"

    admin_client.post(ADD_URL, channel_data(case_response_template=template))

    assert Mailbox.objects.get().case_response_template == template
