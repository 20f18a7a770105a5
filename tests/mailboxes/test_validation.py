"""Every rule on the channel form, with the message the administrator reads.

These save offline channels (enabled unticked) so no login is tried: the rules alone decide.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox

pytestmark = pytest.mark.django_db
ADD_URL = reverse("admin:mailboxes_mailbox_add")


def save(admin_client, data):
    response = admin_client.post(ADD_URL, data, follow=True)
    return response, response.content.decode()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"incoming_port": "0"}, "greater than or equal to 1"),
        ({"incoming_port": "70000"}, "less than or equal to 65535"),
        ({"smtp_port": "25a"}, "Enter a whole number"),
        ({"incoming_host": ""}, "Incoming host is required when the channel receives emails"),
        ({"password": ""}, "Password is required to sign in to the incoming server"),
        ({"smtp_host": ""}, "SMTP host is required to send through SMTP"),
        ({"server_type": "sendgrid"}, "SendGrid API token is required to send through SendGrid"),
        ({"refresh_interval": "10"}, "greater than or equal to 30"),
        ({"email_address": "not-an-address"}, "Enter a valid email address"),
        ({"auth_type": "oauth2"}, "Choose the OAuth provider"),
        ({"auth_type": "oauth2", "oauth_provider": "custom"}, "Client ID is required"),
        (
            {"auth_type": "oauth2", "oauth_provider": "custom", "oauth_client_id": "abc"},
            "Give the discovery URL, or both the auth URL and the access token URL",
        ),
        (
            {"auth_type": "oauth2", "oauth_provider": "google"},
            "set POSTROOM_GOOGLE_CLIENT_ID for the whole deployment",
        ),
    ],
)
def test_it_refuses_values_that_cannot_work(admin_client, channel_data, overrides, message):
    _, page = save(admin_client, channel_data(enabled=None, **overrides))
    assert message in page
    assert not Mailbox.objects.exists()


def test_an_outbound_only_channel_needs_no_incoming_server(admin_client, channel_data):
    save(
        admin_client,
        channel_data(enabled=None, listen=None, incoming_host="", incoming_port="", password=""),
    )
    assert Mailbox.objects.get().listen is False


def test_sendgrid_needs_no_smtp_server(admin_client, channel_data):
    save(
        admin_client,
        channel_data(
            enabled=None,
            server_type="sendgrid",
            smtp_host="",
            smtp_port="",
            sendgrid_api_token="SG.token",
        ),
    )
    assert Mailbox.objects.get().sendgrid_api_token == "SG.token"


def test_google_oauth_uses_the_deployment_app_when_the_channel_has_none(
    admin_client, channel_data, settings
):
    settings.POSTROOM_GOOGLE_CLIENT_ID = "deployment-client-id"
    save(
        admin_client,
        channel_data(enabled=None, auth_type="oauth2", oauth_provider="google", password=""),
    )
    assert Mailbox.objects.get().oauth_provider == "google"


def test_names_and_addresses_are_unique_whatever_the_case(admin_client, channel_data):
    save(admin_client, channel_data(enabled=None))
    first = Mailbox.objects.get()

    _, page = save(admin_client, channel_data(enabled=None, email_address="x@example.test"))
    assert "Email channel with this Name already exists" in page

    _, page = save(
        admin_client,
        channel_data(enabled=None, name="Other", email_address=first.email_address.upper()),
    )
    assert f"Another channel ({first.name}) already uses this address" in page
    assert Mailbox.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "warning"),
    [
        ({"incoming_port": "143", "incoming_security": "ssl"}, "Incoming port 143 usually"),
        ({"smtp_port": "465", "smtp_security": "starttls"}, "SMTP port 465 usually expects"),
    ],
)
def test_a_port_and_security_that_do_not_fit_get_a_warning(
    admin_client, channel_data, overrides, warning
):
    _, page = save(admin_client, channel_data(enabled=None, **overrides))
    assert warning in page
    assert Mailbox.objects.exists()  # a warning, not a refusal


def test_an_empty_port_takes_the_usual_one(admin_client, channel_data):
    save(
        admin_client,
        channel_data(
            enabled=None,
            incoming_port="",
            incoming_security="ssl",
            smtp_port="",
            smtp_security="starttls",
        ),
    )
    mailbox = Mailbox.objects.get()
    assert (mailbox.incoming_port, mailbox.smtp_port) == (993, 587)


@pytest.mark.parametrize(
    ("preset", "protocol", "incoming", "outgoing", "copy_to_sent", "sent_folder"),
    [
        (
            "gmail",
            "imap",
            ("imap.gmail.com", 993, "ssl"),
            ("smtp.gmail.com", 587, "starttls"),
            False,
            "[Gmail]/Sent Mail",
        ),
        (
            "microsoft",
            "pop3",
            ("outlook.office365.com", 995, "ssl"),
            ("smtp.office365.com", 587, "starttls"),
            False,
            "Sent Items",
        ),
        (
            "yahoo",
            "imap",
            ("imap.mail.yahoo.com", 993, "ssl"),
            ("smtp.mail.yahoo.com", 465, "ssl"),
            True,
            "Sent",
        ),
        (
            "icloud",
            "imap",
            ("imap.mail.me.com", 993, "ssl"),
            ("smtp.mail.me.com", 587, "starttls"),
            True,
            "Sent Messages",
        ),
    ],
)
def test_a_preset_fills_the_servers_left_empty(
    admin_client, channel_data, preset, protocol, incoming, outgoing, copy_to_sent, sent_folder
):
    save(
        admin_client,
        channel_data(
            enabled=None,
            preset=preset,
            protocol=protocol,
            incoming_host="",
            incoming_port="",
            smtp_host="",
            smtp_port="",
        ),
    )
    mailbox = Mailbox.objects.get()
    assert (mailbox.incoming_host, mailbox.incoming_port, mailbox.incoming_security) == incoming
    assert (mailbox.smtp_host, mailbox.smtp_port, mailbox.smtp_security) == outgoing
    assert (mailbox.copy_to_sent, mailbox.sent_folder) == (copy_to_sent, sent_folder)


def test_a_preset_never_overwrites_what_the_administrator_typed(admin_client, channel_data):
    save(admin_client, channel_data(enabled=None, preset="gmail", incoming_host="mail.example.org"))
    assert Mailbox.objects.get().incoming_host == "mail.example.org"


def test_the_flow_is_chosen_from_the_registered_flows(admin_client, channel_data):
    _, page = save(admin_client, channel_data(enabled=None, flow="no_such_flow"))
    assert "Select a valid choice" in page
    page = admin_client.get(ADD_URL).content.decode()
    assert "Create case" in page
