"""An administrator tests a channel's outgoing SMTP server; the outbox sends through it."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers.checks import smtp_check
from providers.config import Credentials, ServerAddress, SmtpSettings
from providers.errors import (
    AuthenticationFailed,
    CertificateUntrusted,
    ConnectionRefused,
    ConnectionTimedOut,
    ProtocolError,
    TLSFailed,
)
from providers.smtp import smtp_connect
from tests.providers.conftest import POLICY, SHORT_TIMEOUT, TIMEOUT, raw_message

USER = "support@example.test"
PASSWORD = "correct horse battery staple"
CUSTOMER = "customer@example.com"


@pytest.fixture
def smtp_user(smtp):
    smtp.add_user(USER, PASSWORD)
    return smtp


def settings(
    smtp,
    security: str = "starttls",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    password: str | None = PASSWORD,
    trust: bool = True,
    timeout: float = TIMEOUT,
) -> SmtpSettings:
    ports = {"starttls": smtp.starttls_port, "ssl": smtp.smtps_port, "none": smtp.plain_port}
    server = ServerAddress(host, port or ports[security], security, trust, timeout)
    return SmtpSettings(server, Credentials(USER, password) if password is not None else None)


def send(config: SmtpSettings, *, recipient: str = CUSTOMER) -> None:
    async def go() -> None:
        async with smtp_connect(config, POLICY) as client:
            await client.sendmail(USER, [recipient], raw_message(1))

    asyncio.run(go())


@pytest.mark.parametrize("security", ["starttls", "ssl", "none"])
def test_it_logs_in_as_configured(smtp_user, security):
    assert smtp_check(settings(smtp_user, security), POLICY) is None


def test_it_checks_a_server_that_takes_mail_without_login(smtp):
    smtp.auth_required = False

    smtp_check(settings(smtp, "none", password=None), POLICY)
    send(settings(smtp, "none", password=None))

    assert smtp.wait_for(1)[0].login is None


@pytest.mark.parametrize(("security", "encrypted"), [("none", False), ("starttls", True)])
def test_it_uses_starttls_exactly_when_configured(smtp_user, security, encrypted):
    # The STARTTLS port offers STARTTLS; with security "none" it must not be taken up.
    smtp_user.auth_require_tls = False

    send(settings(smtp_user, security, port=smtp_user.starttls_port))

    [message] = smtp_user.wait_for(1)
    assert (message.tls, message.login) == (encrypted, USER)


def test_it_reports_a_wrong_password_in_the_servers_words(smtp_user):
    with pytest.raises(AuthenticationFailed) as caught:
        smtp_check(settings(smtp_user, password="not-the-password"), POLICY)

    assert str(caught.value) == (
        "127.0.0.1 refused the username or password (server said: 535 5.7.8 Authentication "
        "credentials invalid). Check them; Gmail and Microsoft need an app password or OAuth2."
    )
    assert caught.value.permanent


def test_it_says_login_needs_encryption_when_none_is_chosen(smtp_user):
    with pytest.raises(AuthenticationFailed, match="no login .* unencrypted connection"):
        smtp_check(settings(smtp_user, "none", port=smtp_user.starttls_port), POLICY)


def test_it_requires_starttls_when_chosen(smtp_user):
    with pytest.raises(TLSFailed) as caught:
        smtp_check(settings(smtp_user, "starttls", port=smtp_user.plain_port), POLICY)

    assert f"port {smtp_user.plain_port} does not offer STARTTLS" in str(caught.value)


def test_it_says_nothing_answers_on_a_closed_port(smtp_user, closed_port):
    with pytest.raises(ConnectionRefused) as caught:
        smtp_check(settings(smtp_user, port=closed_port), POLICY)

    assert str(caught.value) == f"Nothing answers on 127.0.0.1 port {closed_port}: check the port."


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_it_distrusts_a_self_signed_certificate_unless_told(smtp_user, security):
    with pytest.raises(CertificateUntrusted) as caught:
        smtp_check(settings(smtp_user, security, trust=False), POLICY)

    assert "The certificate of 127.0.0.1 is not trusted (self-signed certificate)" in str(
        caught.value
    )


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_it_verifies_the_certificate_against_the_name_typed(
    smtp_user, trust_certificate, fake_dns, security
):
    trust_certificate(smtp_user.cert_path)
    fake_dns("mail.postroom.test", ["127.0.0.1"])

    smtp_check(settings(smtp_user, security, host="localhost", trust=False), POLICY)
    with pytest.raises(CertificateUntrusted, match="for another name"):
        smtp_check(settings(smtp_user, security, host="mail.postroom.test", trust=False), POLICY)


def test_it_fails_fast_when_ssl_is_chosen_for_a_plain_port(smtp_user):
    started = time.monotonic()

    with pytest.raises(TLSFailed, match="wrong version number"):
        smtp_check(settings(smtp_user, "ssl", port=smtp_user.plain_port), POLICY)

    assert time.monotonic() - started < 1


def test_it_suggests_ssl_when_the_port_waits_for_a_handshake(smtp_user):
    config = settings(smtp_user, "none", port=smtp_user.smtps_port, timeout=SHORT_TIMEOUT)

    with pytest.raises(ConnectionTimedOut, match="sent no SMTP greeting.*set security to SSL/TLS"):
        smtp_check(config, POLICY)


@pytest.mark.parametrize(("code", "permanent"), [(550, True), (451, False)])
def test_it_tells_the_outbox_whether_a_refusal_is_worth_retrying(smtp_user, code, permanent):
    smtp_user.fail_next("RCPT", code, "Mailbox unavailable")

    with pytest.raises(ProtocolError) as caught:
        send(settings(smtp_user))

    assert f"server said: {code} Mailbox unavailable" in str(caught.value)
    assert caught.value.permanent is permanent
