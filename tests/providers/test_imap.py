"""An administrator tests an IMAP channel against a real Dovecot and reads what went wrong."""

from __future__ import annotations

import time

import pytest

from providers.checks import incoming_check
from providers.config import Credentials, IncomingSettings, ServerAddress
from providers.errors import (
    AuthenticationFailed,
    CertificateUntrusted,
    ConnectionRefused,
    ConnectionTimedOut,
    FolderMissing,
    HostNotFound,
    ProtocolError,
    TLSFailed,
)
from providers.imap import imap_check, imap_connect
from tests.providers.conftest import POLICY, SHORT_TIMEOUT, TIMEOUT, raw_message


def imap(
    dovecot,
    user,
    security: str = "ssl",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    password: str | None = None,
    folder: str = "INBOX",
    trust: bool = True,
    timeout: float = TIMEOUT,
) -> IncomingSettings:
    default_port = {"none": dovecot.ports.imap, "starttls": dovecot.ports.imap}
    server = ServerAddress(
        host=host,
        port=port or default_port.get(security, dovecot.ports.imaps),
        security=security,
        trust_self_signed=trust,
        timeout=timeout,
    )
    credentials = Credentials(user.name, user.password if password is None else password)
    return IncomingSettings("imap", server, credentials, folder=folder)


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_counts_the_messages_in_the_inbox(dovecot, mail_user, security):
    for number in range(3):
        dovecot.deliver(mail_user, raw_message(number))

    check = incoming_check(imap(dovecot, mail_user, security), POLICY)

    assert check.message_count == 3
    assert check.uidvalidity is not None and check.uidvalidity > 0
    assert check.uidnext == 4


def test_it_looks_without_touching(dovecot, mail_user):
    dovecot.deliver(mail_user, raw_message(1))

    imap_check(imap(dovecot, mail_user), POLICY)

    with dovecot.imap(mail_user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search("UNSEEN") == [1]


def test_it_checks_the_configured_folder(dovecot, mail_user):
    dovecot.create_folder(mail_user, "Support")
    dovecot.deliver(mail_user, raw_message(1), folder="Support")

    check = imap_check(imap(dovecot, mail_user, folder="Support"), POLICY)

    assert check.message_count == 1


def test_it_names_a_missing_folder(dovecot, mail_user):
    with pytest.raises(FolderMissing) as caught:
        imap_check(imap(dovecot, mail_user, folder="Archive"), POLICY)

    assert "Folder 'Archive' does not exist on the server" in str(caught.value)
    assert "check the mailbox folder name" in str(caught.value)


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_reports_a_wrong_password_without_repeating_it(dovecot, mail_user, security):
    settings = imap(dovecot, mail_user, security, password="not-the-password")

    with pytest.raises(AuthenticationFailed) as caught:
        imap_check(settings, POLICY)

    message = str(caught.value)
    assert message.startswith("127.0.0.1 refused the username or password (server said: ")
    assert "AUTHENTICATIONFAILED" in message
    assert "not-the-password" not in message
    assert caught.value.permanent


def test_it_logs_in_with_a_non_ascii_password(dovecot):
    user = dovecot.add_user(password="grüße-änderung")

    assert imap_check(imap(dovecot, user), POLICY).message_count == 0


def test_it_says_nothing_answers_on_a_closed_port(dovecot, mail_user, closed_port):
    with pytest.raises(ConnectionRefused) as caught:
        imap_check(imap(dovecot, mail_user, "none", port=closed_port), POLICY)

    assert str(caught.value) == f"Nothing answers on 127.0.0.1 port {closed_port}: check the port."
    assert not caught.value.permanent


def test_it_says_a_host_does_not_exist(dovecot, mail_user):
    with pytest.raises(HostNotFound) as caught:
        imap_check(imap(dovecot, mail_user, host="nonexistent.invalid"), POLICY)

    assert "nonexistent.invalid could not be found" in str(caught.value)
    assert caught.value.permanent


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_it_distrusts_a_self_signed_certificate_unless_told(dovecot, mail_user, security):
    with pytest.raises(CertificateUntrusted) as caught:
        imap_check(imap(dovecot, mail_user, security, trust=False), POLICY)

    assert str(caught.value) == (
        "The certificate of 127.0.0.1 is not trusted (self-signed certificate). If you run "
        "this server yourself, tick 'trust a self-signed certificate'."
    )


def test_it_verifies_the_certificate_against_the_name_typed(
    dovecot, mail_user, trust_certificate, fake_dns
):
    # The certificate is for localhost and 127.0.0.1; a CA vouches for it now.
    trust_certificate(dovecot.cert_path)
    assert imap_check(imap(dovecot, mail_user, host="localhost", trust=False), POLICY)

    # Same address, another name: the check is against the name, not the IP connected to.
    fake_dns("mail.postroom.test", ["127.0.0.1"])
    with pytest.raises(CertificateUntrusted, match="for another name"):
        imap_check(imap(dovecot, mail_user, host="mail.postroom.test", trust=False), POLICY)


def test_it_fails_fast_when_ssl_is_chosen_for_the_plain_port(dovecot, mail_user):
    settings = imap(dovecot, mail_user, "ssl", port=dovecot.ports.imap)
    started = time.monotonic()

    with pytest.raises(TLSFailed) as caught:
        imap_check(settings, POLICY)

    assert time.monotonic() - started < 1
    assert f"TLS with 127.0.0.1 port {dovecot.ports.imap} failed (wrong version number)" in str(
        caught.value
    )
    assert "check that the security setting" in str(caught.value)


def test_it_suggests_ssl_when_the_port_waits_for_a_handshake(dovecot, mail_user):
    settings = imap(dovecot, mail_user, "none", port=dovecot.ports.imaps, timeout=SHORT_TIMEOUT)

    with pytest.raises(ConnectionTimedOut) as caught:
        imap_check(settings, POLICY)

    assert "sent no IMAP greeting within 0.5 s" in str(caught.value)
    assert "set security to SSL/TLS" in str(caught.value)


def test_it_hands_out_a_logged_in_client_for_the_pollers(dovecot, mail_user):
    dovecot.deliver(mail_user, raw_message(7))

    with imap_connect(imap(dovecot, mail_user, "starttls"), POLICY) as client:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])

    assert [data[b"BODY[]"] for data in fetched.values()] == [raw_message(7)]


def test_a_connection_that_breaks_during_sign_in_is_not_a_wrong_password(
    dovecot, mail_user, tcp_proxy
):
    import socket

    proxy = tcp_proxy(dovecot.ports.imap)
    with socket.create_connection(("127.0.0.1", dovecot.ports.imap), timeout=5) as probe:
        greeting = probe.recv(4096)  # Dovecot's greeting carries its capabilities
    proxy.cut_after(len(greeting))  # the greeting passes; the answer to LOGIN never does

    with pytest.raises(ProtocolError) as caught:
        imap_check(imap(dovecot, mail_user, "none", port=proxy.port), POLICY)
    assert "broke" in str(caught.value)
    assert "password" not in str(caught.value)
    assert not caught.value.permanent
