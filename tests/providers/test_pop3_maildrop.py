"""The poller reads a real Dovecot maildrop over POP3 by UIDL and deletes what it stored."""

from __future__ import annotations

import contextlib
import pickle
import poplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.config import Credentials, IncomingSettings, ServerAddress
from providers.errors import MessageUnreadable, ProtocolError, ProviderError
from providers.pop3 import pop3_connect
from providers.pop3_maildrop import Pop3Maildrop, Pop3Message
from tests.providers.conftest import POLICY, TIMEOUT, raw_message

BIG = 10 * 2**20  # a max_size nothing in these tests reaches


def settings(dovecot, user, security="none", *, port=None) -> IncomingSettings:
    default = dovecot.ports.pop3s if security == "ssl" else dovecot.ports.pop3
    server = ServerAddress("127.0.0.1", port or default, security, True, TIMEOUT)
    return IncomingSettings("pop3", server, Credentials(user.name, user.password))


@contextlib.contextmanager
def maildrop(dovecot, user, security="none", *, port=None) -> Iterator[Pop3Maildrop]:
    with pop3_connect(settings(dovecot, user, security, port=port), POLICY) as client:
        yield Pop3Maildrop(client)


def deliver(dovecot, user, *messages: bytes) -> list[Path]:
    return [dovecot.deliver(user, raw) for raw in messages]


def with_body(number: int, body: bytes) -> bytes:
    return raw_message(number).replace(f"Where is parcel {number}?".encode(), body)


def test_it_lists_uidls_and_sizes(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1), raw_message(22), raw_message(333))

    with maildrop(dovecot, mail_user) as drop:
        messages = drop.messages()

    assert [m.number for m in messages] == [1, 2, 3]
    assert [m.size for m in messages] == [len(raw_message(n)) for n in (1, 22, 333)]
    assert len({m.uidl for m in messages}) == 3


def test_it_lists_an_empty_maildrop(dovecot, mail_user):
    with maildrop(dovecot, mail_user) as drop:
        assert drop.messages() == []


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_retrieves_the_bytes_the_server_holds(dovecot, mail_user, security):
    crlf = raw_message(1) + b".\r\n..two dots\r\n.\r\n"
    bare_lf = b"From: a@example.com\nSubject: Unix mail\n\n.leading dot\nlast line\n"
    deliver(dovecot, mail_user, crlf, bare_lf)

    with maildrop(dovecot, mail_user, security) as drop:
        retrieved = [drop.retrieve(m, max_size=BIG) for m in drop.messages()]

    # In a fresh Maildir the n-th message has UID n.
    over_imap = [dovecot.fetch_raw(mail_user, uid) for uid in (1, 2)]
    assert [r.raw for r in retrieved] == over_imap
    assert retrieved[0].raw == crlf
    assert retrieved[1].raw == bare_lf.replace(b"\n", b"\r\n")
    assert [(r.size, r.truncated) for r in retrieved] == [(len(raw), False) for raw in over_imap]


def test_it_retrieves_a_line_far_longer_than_poplib_allows(dovecot, mail_user):
    raw = with_body(1, b"<p>" + b"x" * 50_000 + b"</p>")
    deliver(dovecot, mail_user, raw)

    with maildrop(dovecot, mail_user) as drop:
        [message] = drop.messages()
        assert drop.retrieve(message, max_size=BIG).raw == raw


def test_it_fetches_only_the_header_block_of_an_oversize_message(dovecot, mail_user):
    big = with_body(1, b"y" * 200_000)
    deliver(dovecot, mail_user, big, raw_message(2))

    with maildrop(dovecot, mail_user) as drop:
        retrieved = [drop.retrieve(m, max_size=100_000) for m in drop.messages()]

    assert [r.truncated for r in retrieved] == [True, False]
    assert retrieved[0].raw == big[: big.index(b"\r\n\r\n") + 4]
    assert retrieved[0].size == len(big)
    assert retrieved[1].raw == raw_message(2)


def test_it_skips_a_message_the_server_will_not_hand_over(dovecot, mail_user):
    paths = deliver(dovecot, mail_user, *(raw_message(n) for n in (1, 2, 3)))

    with maildrop(dovecot, mail_user) as drop:
        first, second, third = drop.messages()
        remove_from_disk(paths[1])  # another program took it meanwhile
        assert drop.retrieve(first, max_size=BIG).raw == raw_message(1)
        with pytest.raises(MessageUnreadable) as caught:
            drop.retrieve(second, max_size=BIG)
        assert drop.retrieve(third, max_size=BIG).raw == raw_message(3)

    error = caught.value
    assert (error.uidl, error.permanent) == (second.uidl, False)
    assert error.reason.startswith("the server said: -ERR")
    assert str(error).startswith(f"Message {second.uidl} (number 2) could not be read: ")


def test_it_skips_a_message_with_a_line_over_the_raised_limit_and_reads_on(dovecot, mail_user):
    too_long = with_body(2, b"z" * (poplib._MAXLINE + 10))
    deliver(dovecot, mail_user, raw_message(1), too_long, raw_message(3))

    with maildrop(dovecot, mail_user) as drop:
        first, second, third = drop.messages()
        with pytest.raises(MessageUnreadable, match="has a line longer than") as caught:
            drop.retrieve(second, max_size=BIG)
        assert drop.retrieve(third, max_size=BIG).raw == raw_message(3)
        assert drop.retrieve(first, max_size=BIG).raw == raw_message(1)

    assert caught.value.uidl == second.uidl


def test_it_deletes_only_the_given_messages_at_quit(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in (1, 2, 3)))

    with maildrop(dovecot, mail_user) as drop:
        first, _second, third = drop.messages()
        drop.delete([first, third])
        assert dovecot.folder_uids(mail_user) == [1, 2, 3]  # nothing before QUIT
        drop.quit()

    assert dovecot.folder_uids(mail_user) == [2]


def test_it_deletes_nothing_when_the_session_breaks_before_quit(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1), raw_message(2))

    with pytest.raises(RuntimeError), maildrop(dovecot, mail_user) as drop:
        drop.delete(drop.messages())
        raise RuntimeError("the worker died before committing")

    with maildrop(dovecot, mail_user) as drop:
        drop.delete(drop.messages())
        drop.client.close()  # the connection drops: no QUIT

    assert dovecot.folder_uids(mail_user) == [1, 2]


def test_it_reports_the_same_uidl_across_sessions(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in (1, 2, 3)))

    with maildrop(dovecot, mail_user) as drop:
        before = drop.messages()
    with maildrop(dovecot, mail_user) as drop:
        assert drop.messages() == before
        drop.delete(before[:1])
        drop.quit()
    with maildrop(dovecot, mail_user) as drop:
        after = drop.messages()

    # Numbers are per session and shift; the UIDL stays with its message.
    assert after == [Pop3Message(n - 1, m.uidl, m.size) for n, m in enumerate(before[1:], 2)]


@pytest.mark.parametrize("security", ["none", "ssl"])
def test_it_reports_a_connection_cut_mid_retrieve_as_a_provider_error(
    dovecot, mail_user, tcp_proxy, security
):
    deliver(dovecot, mail_user, with_body(1, b"w" * 2_000_000))
    proxy = tcp_proxy(dovecot.ports.pop3s if security == "ssl" else dovecot.ports.pop3)

    opening = maildrop(dovecot, mail_user, security, port=proxy.port)
    with pytest.raises(ProtocolError) as caught, opening as drop:
        [message] = drop.messages()
        proxy.cut_after(100_000)
        drop.retrieve(message, max_size=BIG)

    assert str(caught.value).startswith(f"The POP3 connection to 127.0.0.1 port {proxy.port} ")
    assert not caught.value.permanent
    assert dovecot.folder_uids(mail_user) == [1]


def test_it_reports_a_connection_dropped_before_quit(dovecot, mail_user, tcp_proxy):
    deliver(dovecot, mail_user, raw_message(1))
    proxy = tcp_proxy(dovecot.ports.pop3)

    with maildrop(dovecot, mail_user, port=proxy.port) as drop:
        drop.delete(drop.messages())
        proxy.cut_all()
        with pytest.raises(ProviderError) as caught:
            drop.quit()

    assert isinstance(caught.value, ProtocolError)
    assert dovecot.folder_uids(mail_user) == [1]


def test_it_keeps_the_uidl_of_an_unreadable_message_through_pickling():
    error = MessageUnreadable("Message 0001 could not be read.", uidl="0001", reason="gone")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.message, copy.uidl, copy.reason, copy.permanent) == (
        "Message 0001 could not be read.",
        "0001",
        "gone",
        False,
    )
    assert copy.kind == "message_unreadable"


def remove_from_disk(delivered: Path) -> None:
    """Delete a delivered Maildir file, wherever Dovecot moved it (new/ -> cur/ with flags)."""
    maildir = delivered.parent.parent
    [path] = [*maildir.glob(f"*/{delivered.name}*")]
    path.unlink()
