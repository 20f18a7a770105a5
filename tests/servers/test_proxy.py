"""The fault-test proxy relays a real IMAP session and drops it where a test says."""

from __future__ import annotations

import imaplib
import socket

import pytest
from imapclient import IMAPClient

LARGE = 2 * 2**20


def large_message() -> bytes:
    line = b"x" * 998 + b"\r\n"
    return b"Subject: Large\r\n\r\n" + line * (LARGE // len(line))


def connect(proxy) -> IMAPClient:
    return IMAPClient("127.0.0.1", port=proxy.port, ssl=False, timeout=5)


def test_it_relays_an_imap_session(dovecot, mail_user, tcp_proxy):
    dovecot.deliver(mail_user, b"Subject: Hello\r\n\r\nHi\r\n")
    proxy = tcp_proxy(dovecot.ports.imap)

    client = connect(proxy)
    client.login(mail_user.name, mail_user.password)
    client.select_folder("INBOX", readonly=True)
    fetched = client.fetch([1], ["BODY.PEEK[]"])
    client.logout()

    assert fetched[1][b"BODY[]"] == b"Subject: Hello\r\n\r\nHi\r\n"
    assert proxy.connections == 1


def test_it_relays_a_large_message_whole(dovecot, mail_user, tcp_proxy):
    dovecot.deliver(mail_user, large_message())
    client = connect(tcp_proxy(dovecot.ports.imap))
    client.login(mail_user.name, mail_user.password)
    client.select_folder("INBOX", readonly=True)

    assert client.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"] == large_message()


@pytest.mark.parametrize("reset", [True, False])
def test_it_cuts_a_fetch_mid_transfer(dovecot, mail_user, tcp_proxy, reset):
    dovecot.deliver(mail_user, large_message())
    proxy = tcp_proxy(dovecot.ports.imap)
    client = connect(proxy)
    client.login(mail_user.name, mail_user.password)
    client.select_folder("INBOX", readonly=True)

    proxy.cut_after(100_000, reset=reset)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.fetch([1], ["BODY.PEEK[]"])

    assert proxy.open_connections == 0


def test_it_cuts_connections_from_their_start_once_told(dovecot, tcp_proxy):
    proxy = tcp_proxy(dovecot.ports.imap)
    proxy.cut_after(10, reset=False)

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        received = b""
        while chunk := sock.recv(1024):
            received += chunk

    assert received == b"* OK [CAPABILITY"[:10]


def test_it_drops_every_open_connection(dovecot, tcp_proxy):
    proxy = tcp_proxy(dovecot.ports.imap)
    clients = [connect(proxy) for _ in range(2)]
    assert proxy.open_connections == 2

    proxy.cut_all()

    assert proxy.open_connections == 0
    for client in clients:
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            client.noop()
