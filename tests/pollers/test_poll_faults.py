"""When the network, the server or the channel's settings fail: the channel turns red with a
sentence an administrator can act on, backs off, and loses and doubles no mail once it works."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from mailboxes.models import InboundMessage, Mailbox
from pollers.fetch import POP3_BATCH_COUNT
from providers.imap_folder import DEFAULT_BATCH_COUNT
from tests.pollers.conftest import message
from tests.servers.net import free_port

pytestmark = pytest.mark.django_db

# A cut budget no poll reaches: the proxy relays as if it never cut.
NEVER = 2**62
BATCH_COUNT = {"imap": DEFAULT_BATCH_COUNT, "pop3": POP3_BATCH_COUNT}


def stored(mailbox: Mailbox) -> list[InboundMessage]:
    return list(InboundMessage.objects.filter(mailbox=mailbox).order_by("pk"))


def on_server(dovecot, user) -> list[bytes]:
    """Every message in the INBOX as the server returns it, over one connection."""
    with dovecot.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
    return [data[b"BODY[]"] for data in fetched.values()]


def deliver_two_batches(dovecot, user, batch_count: int) -> tuple[int, int]:
    """A first batch of small messages, then a second of large ones; returns their byte totals.

    A poll fetches the first batch whole and commits it before it asks for the second, so a cut
    in the middle of the second batch's bytes breaks the poll after some mail is safe.
    """
    small = [message(n, body=f"Small {n}\r\n" + "s" * 2_000) for n in range(batch_count)]
    large = [message(1000 + n, body=("l" * 998 + "\r\n") * 50) for n in range(10)]
    for raw in small + large:
        dovecot.deliver(user, raw)
    return sum(map(len, small)), sum(map(len, large))


# --- the connection drops in the middle of a batch -----------------------------------------


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "hangup"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_connection_dropped_mid_batch_loses_and_doubles_nothing(
    dovecot, mail_user, connected, poll, tcp_proxy, protocol, reset
):
    port = dovecot.ports.imaps if protocol == "imap" else dovecot.ports.pop3s
    proxy = tcp_proxy(port)
    mailbox = connected(protocol=protocol, incoming_port=proxy.port)
    first, second = deliver_two_batches(dovecot, mail_user, BATCH_COUNT[protocol])

    # Protocol chatter is a few kB per hundred messages: half the second batch is well past
    # the first and well before the end of the second.
    proxy.cut_after(first + second // 2, reset=reset)
    result = poll(mailbox)

    assert result.ran and f"connection to 127.0.0.1 port {proxy.port} broke" in result.error
    assert mailbox.status == Mailbox.Status.ERROR
    assert mailbox.last_error == mailbox.status_message == result.error
    assert "Traceback" not in mailbox.last_error
    assert mailbox.consecutive_failures == 1
    assert len(stored(mailbox)) == BATCH_COUNT[protocol]  # the first batch is safe
    assert result.stored == mailbox.last_poll_stored == BATCH_COUNT[protocol]

    proxy.cut_after(NEVER)
    result = poll(mailbox)

    assert not result.error and result.stored == 10  # only what the cut interrupted
    assert mailbox.status == Mailbox.Status.OK and mailbox.consecutive_failures == 0
    rows = stored(mailbox)
    assert len(rows) == BATCH_COUNT[protocol] + 10
    assert sorted(row.raw_bytes() for row in rows) == sorted(on_server(dovecot, mail_user))
    assert all(row.outcome == InboundMessage.Outcome.PROCESSED for row in rows)


# --- the server restarts between polls -----------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_server_restarted_between_polls_is_polled_as_before(
    dovecot, mail_user, connected, poll, protocol
):
    mailbox = connected(protocol=protocol)
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)

    dovecot.restart()
    dovecot.deliver(mail_user, message(2))
    result = poll(mailbox)

    assert not result.error and result.stored == 1
    assert mailbox.status == Mailbox.Status.OK
    assert sorted(r.subject for r in stored(mailbox)) == ["Order 1", "Order 2"]


# --- a channel that cannot be polled -------------------------------------------------------


def wrong_password(dovecot) -> dict:
    return {"password": "not-the-password"}


def closed_port(dovecot) -> dict:
    return {"incoming_port": free_port()}  # nothing listens there


def untrusted_certificate(dovecot) -> dict:
    return {"trust_self_signed": False}


def missing_folder(dovecot) -> dict:
    return {"folder": "Nowhere"}


BROKEN = [
    ("imap", wrong_password, "refused the username or password"),
    ("imap", closed_port, "Nothing answers on 127.0.0.1 port"),
    ("imap", untrusted_certificate, "certificate of 127.0.0.1 is not trusted"),
    ("imap", missing_folder, "Folder 'Nowhere' does not exist on the server"),
    ("pop3", wrong_password, "refused the username or password"),
    ("pop3", closed_port, "Nothing answers on 127.0.0.1 port"),
    ("pop3", untrusted_certificate, "certificate of 127.0.0.1 is not trusted"),
]


@pytest.mark.parametrize(
    ("protocol", "breakage", "says"),
    BROKEN,
    ids=[f"{protocol}-{breakage.__name__}" for protocol, breakage, _ in BROKEN],
)
def test_a_broken_channel_turns_red_says_why_and_backs_off(
    dovecot, make_channel, poll, caplog, protocol, breakage, says
):
    caplog.set_level(logging.INFO)
    mailbox = make_channel(protocol=protocol, **breakage(dovecot))

    for failures in (1, 2):
        result = poll(mailbox)  # returns: a broken channel never raises out of a poll

        assert says in result.error
        assert mailbox.status == Mailbox.Status.ERROR
        assert says in mailbox.status_message and says in mailbox.last_error
        assert mailbox.consecutive_failures == failures
        # The next try waits the refresh interval, doubled per failure, less 20% jitter.
        least = timedelta(seconds=0.8 * mailbox.refresh_interval * 2 ** (failures - 1))
        assert mailbox.next_poll_at - mailbox.last_polled_at >= least
    assert mailbox.cursor_set_at is None  # never reached the mail: nothing was decided

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one line per state
    assert says in warnings[0].getMessage()


def test_a_connected_channel_whose_password_changed_recovers_once_fixed(
    dovecot, mail_user, connected, poll, caplog
):
    caplog.set_level(logging.INFO)
    mailbox = connected()
    Mailbox.objects.filter(pk=mailbox.pk).update(password="changed-elsewhere")
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    poll(mailbox)
    assert mailbox.status == Mailbox.Status.ERROR and mailbox.consecutive_failures == 2

    Mailbox.objects.filter(pk=mailbox.pk).update(password=mail_user.password)
    result = poll(mailbox)

    assert not result.error and result.stored == 1
    assert mailbox.status == Mailbox.Status.OK
    assert mailbox.consecutive_failures == 0
    assert mailbox.status_message.endswith("stored 1 message(s).")
    # Back to the normal interval, not the backoff.
    assert mailbox.next_poll_at - mailbox.last_polled_at == timedelta(
        seconds=mailbox.refresh_interval
    )
    assert [r.getMessage() for r in caplog.records if "works again" in r.getMessage()] == [
        f"channel {mailbox.channel_id}: polling works again after 2 failure(s)"
    ]
    assert stored(mailbox)[0].subject == "Order 1"


# --- a worker dies between storing a batch and processing it --------------------------------


def test_mail_a_dead_worker_stored_but_never_processed_is_processed_by_the_next_poll(
    dovecot, mail_user, connected, poll, monkeypatch
):
    mailbox = connected(protocol="imap")
    dovecot.deliver(mail_user, message(1, subject="Lost in a crash"))

    def killed(rows):
        raise RuntimeError("worker killed")

    monkeypatch.setattr("pollers.services.rows_process", killed)
    with pytest.raises(RuntimeError):
        poll(mailbox)
    monkeypatch.undo()
    (row,) = stored(mailbox)
    assert row.outcome == InboundMessage.Outcome.PENDING

    poll(mailbox)  # too soon: an import slice could still be working on it
    row.refresh_from_db()
    assert row.outcome == InboundMessage.Outcome.PENDING

    InboundMessage.objects.filter(pk=row.pk).update(stored_at=row.stored_at - timedelta(hours=1))
    poll(mailbox)

    row.refresh_from_db()
    assert row.outcome == InboundMessage.Outcome.PROCESSED
    assert row.case_message.case.subject == "Lost in a crash 1"
