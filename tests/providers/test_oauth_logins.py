"""SASL XOAUTH2 logins with an access token: IMAP, POP3 and SMTP against real servers that
check the token at the local OAuth provider (Dovecot's oauth2 passdb, the SMTP fixture)."""

from __future__ import annotations

import pytest

from providers.config import IncomingSettings, ServerAddress, SmtpSettings, TokenCredentials
from providers.errors import AuthenticationFailed
from providers.imap import imap_check
from providers.outgoing import Envelope, smtp_send_many
from providers.pop3 import pop3_check
from providers.smtp import smtp_check
from tests.providers.conftest import POLICY, TIMEOUT, raw_message


@pytest.fixture
def user(dovecot_oauth):
    return dovecot_oauth.add_user()


def incoming(dovecot_oauth, protocol: str, credentials) -> IncomingSettings:
    port = dovecot_oauth.ports.imaps if protocol == "imap" else dovecot_oauth.ports.pop3s
    server = ServerAddress("127.0.0.1", port, "ssl", trust_self_signed=True, timeout=TIMEOUT)
    return IncomingSettings(protocol, server, credentials)


CHECKS = {"imap": imap_check, "pop3": pop3_check}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_it_logs_in_with_the_token_and_counts_the_mail(
    dovecot_oauth, oauth_provider, user, protocol
):
    dovecot_oauth.deliver(user, raw_message(1))
    token = oauth_provider.issue_token(user.address).access_token
    settings = incoming(dovecot_oauth, protocol, TokenCredentials(user.address, token))

    assert CHECKS[protocol](settings, POLICY).message_count == 1


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_an_expired_token_is_refused_without_showing_it(
    dovecot_oauth, oauth_provider, user, protocol
):
    token = oauth_provider.issue_token(user.address).access_token
    oauth_provider.expire_access_tokens()
    settings = incoming(dovecot_oauth, protocol, TokenCredentials(user.address, token))

    with pytest.raises(AuthenticationFailed) as caught:
        CHECKS[protocol](settings, POLICY)

    assert "refused the OAuth2 access token" in str(caught.value)
    assert token not in str(caught.value)
    assert caught.value.permanent


def test_a_server_without_xoauth2_says_so(dovecot, mail_user):
    server = ServerAddress("127.0.0.1", dovecot.ports.imaps, "ssl", True, TIMEOUT)
    settings = IncomingSettings("imap", server, TokenCredentials(mail_user.address, "at-x"))
    with pytest.raises(AuthenticationFailed, match="does not offer OAuth2 logins"):
        imap_check(settings, POLICY)


@pytest.fixture
def smtp_oauth(smtp, oauth_provider):
    smtp.oauth_introspection_url = f"{oauth_provider.url}/introspect"
    return smtp


def smtp_settings(smtp, credentials) -> SmtpSettings:
    server = ServerAddress("127.0.0.1", smtp.smtps_port, "ssl", True, TIMEOUT)
    return SmtpSettings(server, credentials)


def test_it_sends_through_smtp_with_xoauth2(smtp_oauth, oauth_provider):
    token = oauth_provider.issue_token("support@example.test").access_token
    settings = smtp_settings(smtp_oauth, TokenCredentials("support@example.test", token))
    envelope = Envelope("support@example.test", ("carol@example.org",), raw_message(1))

    [result] = smtp_send_many(settings, POLICY, [envelope])

    assert result.ok, result.error
    [received] = smtp_oauth.messages
    assert received.login == "support@example.test"


def test_smtp_refuses_a_revoked_token(smtp_oauth, oauth_provider):
    token = oauth_provider.issue_token("support@example.test").access_token
    oauth_provider.revoke_account("support@example.test")
    settings = smtp_settings(smtp_oauth, TokenCredentials("support@example.test", token))

    with pytest.raises(AuthenticationFailed) as caught:
        smtp_check(settings, POLICY)

    assert "refused the OAuth2 access token" in str(caught.value)
    assert token not in str(caught.value)
