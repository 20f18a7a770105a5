"""Actors and channel form data for the channel-configuration stories."""

from __future__ import annotations

import pytest

SAMPLE = (
    b"From: Carol Customer <carol@example.org>\r\nTo: support@example.test\r\n"
    b"Subject: My order\r\nMessage-ID: <%d@example.org>\r\n\r\nWhere is it?\r\n"
)


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    """The real servers listen on 127.0.0.1, which production blocks by default."""
    settings.POSTROOM_BLOCKED_NETWORKS = ["169.254.0.0/16", "fe80::/10"]
    settings.POSTROOM_CONNECT_TIMEOUT = 5.0


@pytest.fixture
def deliver_samples(dovecot):
    def deliver(user, count: int) -> None:
        for n in range(count):
            dovecot.deliver(user, SAMPLE % n)

    return deliver


@pytest.fixture
def channel_data(dovecot, mail_user, smtp):
    """What an administrator types to connect the Dovecot fixture's mailbox over IMAPS."""
    smtp.add_user(mail_user.address, mail_user.password)

    def build(**overrides) -> dict:
        data = {
            "name": f"Support {mail_user.name}",
            "description": "Customer support",
            "enabled": "on",
            "email_address": mail_user.address,
            "from_name": "Support team",
            "reply_to": "",
            "preset": "generic",
            "listen": "on",
            "protocol": "imap",
            "incoming_host": "127.0.0.1",
            "incoming_port": str(dovecot.ports.imaps),
            "incoming_security": "ssl",
            "username": mail_user.name,
            "password": mail_user.password,
            "folder": "INBOX",
            "sent_folder": "Sent",
            "copy_to_sent": "on",
            "refresh_interval": "60",
            "trust_self_signed": "on",
            "after_import": "leave",
            "move_to_folder": "",
            "max_message_size": str(25 * 2**20),
            "server_type": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": str(smtp.starttls_port),
            "smtp_security": "starttls",
            "smtp_username": mail_user.address,
            "smtp_password": "",
            "sendgrid_api_token": "",
            "auth_type": "basic",
            "oauth_provider": "",
            "oauth_client_id": "",
            "oauth_client_secret": "",
            "oauth_scope": "",
            "oauth_grant_type": "authorization_code",
            "oauth_auth_url": "",
            "oauth_token_url": "",
            "oauth_redirect_uri": "",
            "oauth_discovery_url": "",
            "oauth_login": "",
            "oauth_tenant": "common",
            "case_response_template": "",
            "attachments_allowed": "on",
            "end_of_message_marker": "##- Please type your reply above this line -##",
            "allow_new_case": "on",
            "auto_ack_template": "",
            "sender_filter": "",
            "create_contact_for_unknown": "on",
            "flow": "create_case",
            "aliases-TOTAL_FORMS": "0",
            "aliases-INITIAL_FORMS": "0",
            "aliases-MIN_NUM_FORMS": "0",
            "aliases-MAX_NUM_FORMS": "1000",
        }
        data.update(overrides)
        return {k: v for k, v in data.items() if v is not None}

    return build
