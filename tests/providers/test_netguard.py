"""Hosts an administrator types cannot lead Postroom to itself or to the cloud's metadata."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from providers import netguard
from providers.config import (
    Credentials,
    IncomingSettings,
    NetworkPolicy,
    ServerAddress,
    SmtpSettings,
)
from providers.errors import AddressBlocked, HostNotFound
from providers.imap import imap_check
from providers.pop3 import pop3_check
from providers.smtp import smtp_check
from tests.providers.conftest import LOOPBACK_BLOCKED, POLICY, TIMEOUT


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that would notice a connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def address(host: str, port: int = 993) -> ServerAddress:
    return ServerAddress(host, port, "none", timeout=TIMEOUT)


def assert_never_connected(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::ffff:127.0.0.1"])
def test_it_refuses_loopback_before_connecting(listener, host):
    port = listener.getsockname()[1]

    with pytest.raises(AddressBlocked) as caught:
        netguard.connect(address(host, port), LOOPBACK_BLOCKED)

    assert "127.0.0.1" in str(caught.value)
    assert "is in a blocked network (127.0.0.0/8)" in str(caught.value)
    assert_never_connected(listener)


def test_it_judges_an_ipv4_mapped_address_as_the_ipv4_address():
    policy = NetworkPolicy.from_strings(["127.0.0.0/8"])

    with pytest.raises(AddressBlocked):
        netguard.resolve_allowed("::ffff:127.0.0.1", 993, policy)
    assert netguard.normalise_ip("::ffff:169.254.169.254") == netguard.normalise_ip(
        "169.254.169.254"
    )


def test_it_refuses_the_metadata_service():
    with pytest.raises(AddressBlocked) as caught:
        netguard.connect(address("169.254.169.254", 80), POLICY)

    assert str(caught.value) == "169.254.169.254 is in a blocked network (169.254.0.0/16)."
    assert caught.value.permanent


def test_it_names_the_address_a_host_resolves_to(fake_dns):
    fake_dns("imap.example.com", ["169.254.169.254"])

    with pytest.raises(AddressBlocked) as caught:
        netguard.connect(address("imap.example.com"), POLICY)

    assert str(caught.value) == (
        "imap.example.com resolves to 169.254.169.254, which is in a blocked network "
        "(169.254.0.0/16)."
    )


def test_it_skips_blocked_addresses_and_connects_to_an_allowed_one(fake_dns, listener):
    fake_dns("mail.example.com", ["169.254.169.254", "127.0.0.1"])
    port = listener.getsockname()[1]

    with netguard.connect(address("mail.example.com", port), POLICY) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert sock.gettimeout() == TIMEOUT


def test_it_lets_loopback_through_when_only_link_local_is_blocked(listener):
    port = listener.getsockname()[1]

    assert netguard.resolve_allowed("127.0.0.1", port, POLICY) == [
        (socket.AF_INET, ("127.0.0.1", port))
    ]


def test_it_says_an_unknown_host_cannot_be_found():
    with pytest.raises(HostNotFound) as caught:
        netguard.connect(address("nonexistent.invalid"), POLICY)

    assert str(caught.value).startswith("nonexistent.invalid could not be found (")
    assert str(caught.value).endswith("): check the server name.")
    assert caught.value.permanent


def test_it_reads_blocked_networks_as_operators_write_them():
    policy = NetworkPolicy.from_strings([" 10.0.0.1/8", "fe80::/10", ""])

    assert [str(n) for n in policy.blocked_networks] == ["10.0.0.0/8", "fe80::/10"]


def imap_rebound(dovecot, mail_user) -> None:
    server = ServerAddress("rebind.test", dovecot.ports.imaps, "ssl", True, TIMEOUT)
    imap_check(
        IncomingSettings("imap", server, Credentials(mail_user.name, mail_user.password)), POLICY
    )


def pop3_rebound(dovecot, mail_user) -> None:
    server = ServerAddress("rebind.test", dovecot.ports.pop3s, "ssl", True, TIMEOUT)
    pop3_check(
        IncomingSettings("pop3", server, Credentials(mail_user.name, mail_user.password)), POLICY
    )


def smtp_rebound(smtp) -> None:
    smtp.add_user("support@example.test", "pw")
    server = ServerAddress("rebind.test", smtp.smtps_port, "ssl", True, TIMEOUT)
    smtp_check(SmtpSettings(server, Credentials("support@example.test", "pw")), POLICY)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_it_connects_to_the_address_it_checked_even_if_dns_changes(request, fake_dns, protocol):
    # A rebinding DNS answers loopback once, then the metadata service. "rebind.test" exists
    # only in this resolver, so a library resolving the name again on its own would fail.
    looked_up = fake_dns("rebind.test", ["127.0.0.1"], ["169.254.169.254"])

    if protocol == "smtp":
        smtp_rebound(request.getfixturevalue("smtp"))
    else:
        dovecot, user = request.getfixturevalue("dovecot"), request.getfixturevalue("mail_user")
        {"imap": imap_rebound, "pop3": pop3_rebound}[protocol](dovecot, user)

    assert looked_up == ["rebind.test"]
