"""Secrets are encrypted at rest and never come back out through a page."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from mailboxes.crypto import SecretUnreadable
from mailboxes.models import Mailbox

ADD_URL = reverse("admin:mailboxes_mailbox_add")
SECRETS = {
    "password": "incoming-Pa55-unique-1",
    "smtp_password": "smtp-Pa55-unique-2",
    "sendgrid_api_token": "SG.token-unique-3",
    "oauth_client_secret": "client-secret-unique-4",
}


def stored_bytes() -> bytes:
    """The database file as it is on disk, write-ahead log included."""
    name = Path(connection.settings_dict["NAME"])
    return b"".join(p.read_bytes() for p in (name, Path(f"{name}-wal")) if p.exists())


@pytest.mark.django_db(transaction=True)
def test_secrets_appear_neither_in_the_database_file_nor_in_any_admin_page(
    admin_client, channel_data
):
    admin_client.post(ADD_URL, channel_data(enabled=None, **SECRETS))
    mailbox = Mailbox.objects.get()
    assert mailbox.smtp_password == SECRETS["smtp_password"]  # readable by Postroom itself

    disk = stored_bytes()
    pages = [
        admin_client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])),
        admin_client.get(reverse("admin:mailboxes_mailbox_changelist")),
        admin_client.get(reverse("admin:mailboxes_mailbox_delete", args=[mailbox.pk])),
        admin_client.get(reverse("admin:mailboxes_mailbox_history", args=[mailbox.pk])),
    ]
    for secret in SECRETS.values():
        assert secret.encode() not in disk
        for page in pages:
            assert secret not in page.content.decode()
    assert "Set" in pages[0].content.decode()


@pytest.mark.django_db
def test_an_empty_box_keeps_the_secret_and_remove_clears_it(admin_client, channel_data):
    admin_client.post(ADD_URL, channel_data(enabled=None, **SECRETS))
    mailbox = Mailbox.objects.get()
    change = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])

    admin_client.post(change, channel_data(enabled=None, description="edited", password=""))
    mailbox.refresh_from_db()
    assert mailbox.description == "edited"
    assert mailbox.password == SECRETS["password"]

    admin_client.post(
        change,
        channel_data(enabled=None, password="", smtp_password="", clear_smtp_password="on"),
    )
    mailbox.refresh_from_db()
    assert mailbox.smtp_password == ""
    assert mailbox.password == SECRETS["password"]


@pytest.mark.django_db
def test_rotate_secrets_moves_every_secret_to_the_newest_key(admin_client, channel_data, settings):
    old_key = settings.POSTROOM_ENCRYPTION_KEYS[0]
    admin_client.post(ADD_URL, channel_data(enabled=None, **SECRETS))

    settings.POSTROOM_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    call_command("rotate_secrets", stdout=io.StringIO())

    settings.POSTROOM_ENCRYPTION_KEYS = settings.POSTROOM_ENCRYPTION_KEYS[:1]  # old key gone
    mailbox = Mailbox.objects.get()
    assert mailbox.password == SECRETS["password"]
    assert mailbox.oauth_client_secret == SECRETS["oauth_client_secret"]


@pytest.mark.django_db
def test_a_missing_key_is_named_not_a_garbled_password(admin_client, channel_data, settings):
    admin_client.post(ADD_URL, channel_data(enabled=None, **SECRETS))
    settings.POSTROOM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SecretUnreadable, match="POSTROOM_ENCRYPTION_KEYS"):
        Mailbox.objects.get()
