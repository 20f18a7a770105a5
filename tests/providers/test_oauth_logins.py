"""SASL logins with an access token: IMAP, POP3 and SMTP against real servers that check the
token at the local OAuth provider (Dovecot's oauth2 passdb, the SMTP fixture). OAUTHBEARER
(RFC 7628) where the server offers it, XOAUTH2 where it offers only that."""

from __future__ import annotations

import pytest

from providers.config import IncomingSettings, ServerAddress, SmtpSettings, TokenCredentials
from providers.errors import AuthenticationFailed
from providers.imap import imap_check
from providers.outgoing import Envelope, smtp_send_many
from providers.pop3 import pop3_check
from providers.smtp import smtp_check
from tests.providers.conftest import POLICY, TIMEOUT, raw_message

CHECKS = {"imap": imap_check, "pop3": pop3_check}
# The Dovecot fixture, and the mechanism Postroom must pick from what it offers.
SERVERS = [("dovecot_oauth", "OAUTHBEARER"), ("dovecot_xoauth2", "XOAUTH2")]
SENDER = "support@example.test"


@pytest.fixture(params=SERVERS, ids=[mechanism for _, mechanism in SERVERS])
def token_dovecot(request):
    """(server, the mechanism a login to it must use)."""
    name, mechanism = request.param
    return request.getfixturevalue(name), mechanism


def incoming(server, protocol: str, credentials) -> IncomingSettings:
    port = server.ports.imaps if protocol == "imap" else server.ports.pop3s
    address = ServerAddress("127.0.0.1", port, "ssl", trust_self_signed=True, timeout=TIMEOUT)
    return IncomingSettings(protocol, address, credentials)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_it_logs_in_with_the_token_and_counts_the_mail(token_dovecot, oauth_provider, protocol):
    server, mechanism = token_dovecot
    user = server.add_user()
    server.deliver(user, raw_message(1))
    token = oauth_provider.issue_token(user.address).access_token
    settings = incoming(server, protocol, TokenCredentials(user.address, token))

    assert CHECKS[protocol](settings, POLICY).message_count == 1
    # Dovecot's login process says which mechanism opened the session.
    assert f"user=<{user.name}>, method={mechanism}" in server.log_tail(200)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_an_expired_token_is_refused_without_showing_it(token_dovecot, oauth_provider, protocol):
    server, _mechanism = token_dovecot
    user = server.add_user()
    token = oauth_provider.issue_token(user.address).access_token
    oauth_provider.expire_access_tokens()
    settings = incoming(server, protocol, TokenCredentials(user.address, token))

    with pytest.raises(AuthenticationFailed) as caught:
        CHECKS[protocol](settings, POLICY)

    assert "refused the OAuth2 access token" in str(caught.value)
    assert token not in str(caught.value)
    assert caught.value.permanent


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_server_without_token_logins_says_so(dovecot, mail_user, protocol):
    settings = incoming(dovecot, protocol, TokenCredentials(mail_user.address, "at-x"))
    with pytest.raises(AuthenticationFailed, match="does not offer OAuth2 logins") as caught:
        CHECKS[protocol](settings, POLICY)
    assert "neither OAUTHBEARER nor XOAUTH2" in str(caught.value)


@pytest.fixture
def smtp_oauth(smtp, oauth_provider):
    smtp.oauth_introspection_url = f"{oauth_provider.url}/introspect"
    return smtp


def smtp_settings(smtp, credentials) -> SmtpSettings:
    server = ServerAddress("127.0.0.1", smtp.smtps_port, "ssl", True, TIMEOUT)
    return SmtpSettings(server, credentials)


# What the SMTP server offers (by leaving the other out), and what Postroom must use.
SMTP_OFFERS = [
    ((), "OAUTHBEARER"),
    (("OAUTHBEARER",), "XOAUTH2"),
    (("XOAUTH2",), "OAUTHBEARER"),
]


@pytest.mark.parametrize(("excluded", "mechanism"), SMTP_OFFERS)
def test_it_sends_through_smtp_with_the_offered_mechanism(
    smtp_oauth, oauth_provider, excluded, mechanism
):
    smtp_oauth.auth_exclude = excluded
    token = oauth_provider.issue_token(SENDER).access_token
    settings = smtp_settings(smtp_oauth, TokenCredentials(SENDER, token))
    envelope = Envelope(SENDER, ("carol@example.org",), raw_message(1))

    [result] = smtp_send_many(settings, POLICY, [envelope])

    assert result.ok, result.error
    [received] = smtp_oauth.messages
    assert received.login == SENDER
    assert smtp_oauth.token_logins == [(mechanism, SENDER)]


@pytest.mark.parametrize("excluded", [(), ("OAUTHBEARER",)], ids=["OAUTHBEARER", "XOAUTH2"])
def test_smtp_refuses_a_revoked_token(smtp_oauth, oauth_provider, excluded):
    smtp_oauth.auth_exclude = excluded
    token = oauth_provider.issue_token(SENDER).access_token
    oauth_provider.revoke_account(SENDER)
    settings = smtp_settings(smtp_oauth, TokenCredentials(SENDER, token))

    with pytest.raises(AuthenticationFailed) as caught:
        smtp_check(settings, POLICY)

    assert "refused the OAuth2 access token" in str(caught.value)
    # 535, not the fixture's 501: the error challenge got the answer its mechanism wants.
    assert "535" in str(caught.value)
    assert token not in str(caught.value)


def test_smtp_without_token_logins_says_so(smtp_oauth):
    smtp_oauth.auth_exclude = ("OAUTHBEARER", "XOAUTH2")
    settings = smtp_settings(smtp_oauth, TokenCredentials(SENDER, "at-x"))
    with pytest.raises(AuthenticationFailed, match="neither OAUTHBEARER nor XOAUTH2"):
        smtp_check(settings, POLICY)
