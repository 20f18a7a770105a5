"""What the provider tests share: quick timeouts, policies, a closed port, a fake resolver."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers import netguard
from providers.config import NetworkPolicy
from tests.servers.net import free_port

# Loopback answers in microseconds; anything slower than this is a bug, not a slow network.
TIMEOUT = 2.0
# For tests that wait for a server that will never speak.
SHORT_TIMEOUT = 0.5

# Loopback must pass (the servers live there) while the metadata range stays blocked.
POLICY = NetworkPolicy.from_strings(["169.254.0.0/16"])
LOOPBACK_BLOCKED = NetworkPolicy.from_strings(["127.0.0.0/8", "::1/128", "169.254.0.0/16"])


def raw_message(number: int) -> bytes:
    return (
        f"From: Customer {number} <customer{number}@example.com>\r\n"
        "To: support@example.test\r\n"
        f"Subject: Question {number}\r\n"
        f"Message-ID: <question-{number}@example.com>\r\n"
        "\r\n"
        f"Where is parcel {number}?\r\n"
    ).encode()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening."""
    return free_port()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Answer netguard's lookups for chosen names; returns the log of names looked up.

    fake_dns("mail.postroom.test", ["127.0.0.1"]) answers with that address every time;
    further lists answer the following lookups (the last repeats), like a rebinding DNS.
    Other names go to the real resolver.
    """
    answers: dict[str, list[list[str]]] = {}
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        looked_up.append(host)
        if host not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[host]
        ips = queue.pop(0) if len(queue) > 1 else queue[0]
        return [_addrinfo(ip, port) for ip in ips]

    def point(host: str, *ip_lists: list[str]) -> list[str]:
        answers[host] = list(ip_lists)
        return looked_up

    monkeypatch.setattr(netguard, "getaddrinfo", resolve)
    return point


def _addrinfo(ip: str, port: int) -> tuple:
    if ":" in ip:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))


@pytest.fixture
def trust_certificate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Add a test server's certificate to the default trust store, as a real CA would be.

    OpenSSL reads SSL_CERT_FILE whenever a default context loads its roots, so verification
    runs exactly as in production, hostname check included.
    """

    def trust(cert_path: Path) -> None:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))

    yield trust
