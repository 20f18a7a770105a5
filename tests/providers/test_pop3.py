"""An administrator tests a POP3 channel against a real Dovecot and reads what went wrong."""

from __future__ import annotations

import pytest

from providers.checks import incoming_check
from providers.config import Credentials, IncomingSettings, ServerAddress
from providers.errors import (
    AuthenticationFailed,
    CertificateUntrusted,
    ConnectionRefused,
    ConnectionTimedOut,
    HostNotFound,
    TLSFailed,
)
from providers.pop3 import pop3_check, pop3_connect
from tests.providers.conftest import POLICY, SHORT_TIMEOUT, TIMEOUT, raw_message


def pop3(
    dovecot,
    user,
    security: str = "ssl",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    password: str | None = None,
    trust: bool = True,
    timeout: float = TIMEOUT,
) -> IncomingSettings:
    default_port = dovecot.ports.pop3s if security == "ssl" else dovecot.ports.pop3
    server = ServerAddress(host, port or default_port, security, trust, timeout)
    credentials = Credentials(user.name, user.password if password is None else password)
    return IncomingSettings("pop3", server, credentials)


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_counts_the_messages_waiting(dovecot, mail_user, security):
    for number in range(3):
        dovecot.deliver(mail_user, raw_message(number))

    check = incoming_check(pop3(dovecot, mail_user, security), POLICY)

    assert check.message_count == 3
    assert (check.uidvalidity, check.uidnext) == (None, None)


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_reports_a_wrong_password_in_the_servers_words(dovecot, mail_user, security):
    settings = pop3(dovecot, mail_user, security, password="not-the-password")

    with pytest.raises(AuthenticationFailed) as caught:
        pop3_check(settings, POLICY)

    assert str(caught.value) == (
        "127.0.0.1 refused the username or password (server said: -ERR [AUTH] Authentication "
        "failed.). Check them; Gmail and Microsoft need an app password or OAuth2."
    )


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_it_distrusts_a_self_signed_certificate_unless_told(dovecot, mail_user, security):
    with pytest.raises(CertificateUntrusted, match="not trusted \\(self-signed certificate\\)"):
        pop3_check(pop3(dovecot, mail_user, security, trust=False), POLICY)


def test_it_verifies_the_certificate_against_the_name_typed(
    dovecot, mail_user, trust_certificate, fake_dns
):
    trust_certificate(dovecot.cert_path)
    fake_dns("mail.postroom.test", ["127.0.0.1"])

    assert pop3_check(pop3(dovecot, mail_user, "starttls", host="localhost", trust=False), POLICY)
    with pytest.raises(CertificateUntrusted, match="for another name"):
        pop3_check(pop3(dovecot, mail_user, host="mail.postroom.test", trust=False), POLICY)


def test_it_says_nothing_answers_on_a_closed_port(dovecot, mail_user, closed_port):
    with pytest.raises(ConnectionRefused, match=f"Nothing answers on 127.0.0.1 port {closed_port}"):
        pop3_check(pop3(dovecot, mail_user, port=closed_port), POLICY)


def test_it_says_a_host_does_not_exist(dovecot, mail_user):
    with pytest.raises(HostNotFound, match="nonexistent.invalid could not be found"):
        pop3_check(pop3(dovecot, mail_user, host="nonexistent.invalid"), POLICY)


def test_it_fails_fast_when_ssl_is_chosen_for_the_plain_port(dovecot, mail_user):
    with pytest.raises(TLSFailed, match="wrong version number"):
        pop3_check(pop3(dovecot, mail_user, "ssl", port=dovecot.ports.pop3), POLICY)


def test_it_suggests_ssl_when_the_port_waits_for_a_handshake(dovecot, mail_user):
    settings = pop3(dovecot, mail_user, "starttls", port=dovecot.ports.pop3s, timeout=SHORT_TIMEOUT)

    with pytest.raises(ConnectionTimedOut, match="sent no POP3 greeting.*set security to SSL/TLS"):
        pop3_check(settings, POLICY)


def test_it_reads_messages_with_lines_longer_than_poplib_allows(dovecot, mail_user):
    # An HTML part without line breaks, as some mailers send: 100 kB on one line.
    long_line = b"<p>" + b"x" * 100_000 + b"</p>"
    raw = raw_message(1).replace(b"Where is parcel 1?", long_line)
    dovecot.deliver(mail_user, raw)

    with pop3_connect(pop3(dovecot, mail_user), POLICY) as client:
        _response, lines, _octets = client.retr(1)

    assert long_line in lines
