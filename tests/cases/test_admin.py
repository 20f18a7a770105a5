"""An administrator finds a customer's case and reads its thread in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.cases.conftest import case_of, mail

pytestmark = pytest.mark.django_db


def test_the_case_page_lists_its_messages_and_why_they_joined(admin_client, channel, receive):
    support = channel()
    case = case_of(receive(support, mail(attachments=[("invoice.pdf", b"%PDF")])))

    listing = admin_client.get(reverse("admin:cases_case_changelist"))
    page = admin_client.get(reverse("admin:cases_case_change", args=[case.pk]))

    assert f"#{case.reference}" in listing.text
    assert "Broken kettle" in listing.text
    assert "My kettle does not boil." in page.text
    assert "Started the case" in page.text
    assert "invoice.pdf" in page.text
    assert "Sent by Postroom" in page.text  # the acknowledgement


def test_the_contact_list_shows_who_wrote(admin_client, channel, receive):
    receive(channel(), mail())

    listing = admin_client.get(reverse("admin:cases_contact_changelist"))

    assert "carol@example.org" in listing.text
