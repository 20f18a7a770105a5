"""The poller reads a real Dovecot folder by UID, in batches, and acts on stored messages."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from imapclient import IMAPClient

from providers.config import Credentials, IncomingSettings, ServerAddress
from providers.errors import FolderMissing, ProtocolError, ProviderError
from providers.imap import imap_connect
from providers.imap_folder import FolderState, ImapFolder
from tests.providers.conftest import POLICY, TIMEOUT, raw_message

KB = 1024
BIG = 10 * 2**20  # a max_size nothing in these tests reaches


def settings(dovecot, user, security="none", *, port=None) -> IncomingSettings:
    default = dovecot.ports.imaps if security == "ssl" else dovecot.ports.imap
    server = ServerAddress("127.0.0.1", port or default, security, True, TIMEOUT)
    return IncomingSettings("imap", server, Credentials(user.name, user.password))


@contextlib.contextmanager
def opened(
    dovecot, user, folder="INBOX", *, readonly=True, security="none", port=None
) -> Iterator[ImapFolder]:
    with imap_connect(settings(dovecot, user, security, port=port), POLICY) as client:
        yield ImapFolder(client, folder, readonly=readonly)


def sized(number: int, size: int) -> bytes:
    """A message of exactly `size` bytes."""
    head = raw_message(number)
    line = b"y" * 78 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    return head + body + b"z" * (size - len(head) - len(body))


def deliver(dovecot, user, *messages: bytes, folder="INBOX") -> None:
    for raw in messages:
        dovecot.deliver(user, raw, folder=folder)


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_reports_uidvalidity_uidnext_and_exists(dovecot, mail_user, security):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(3)))
    with dovecot.imap(mail_user) as client:
        uidvalidity = client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]

    with opened(dovecot, mail_user, security=security) as folder:
        assert folder.state == FolderState(uidvalidity=uidvalidity, uidnext=4, exists=3)


def test_it_reads_an_empty_folder(dovecot, mail_user):
    with opened(dovecot, mail_user) as folder:
        assert folder.state.exists == 0
        assert folder.state.uidnext == 1
        assert folder.uids_after(0) == []
        assert folder.all_uids() == []
        assert folder.sizes([]) == {}
        assert list(folder.batches([], {})) == []
        assert folder.fetch([], max_size=BIG) == []


def test_it_reads_the_configured_folder_and_names_a_missing_one(dovecot, mail_user):
    dovecot.create_folder(mail_user, "Support")
    deliver(dovecot, mail_user, raw_message(1), raw_message(2), folder="Support")

    with opened(dovecot, mail_user, "Support") as folder:
        assert folder.all_uids() == [1, 2]
    missing = pytest.raises(FolderMissing, match="Folder 'Archive' does not exist")
    with missing, opened(dovecot, mail_user, "Archive"):
        pass


def test_it_lists_only_uids_above_the_checkpoint(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 4)))

    with opened(dovecot, mail_user) as folder:
        assert folder.uids_after(0) == [1, 2, 3]
        assert folder.uids_after(1) == [2, 3]
        # The server answers "UID 4:*" with UID 3, the highest there is: nothing is new.
        assert folder.client.search(["UID", "4:*"]) == [3]
        assert folder.uids_after(3) == []
        assert folder.uids_after(99) == []


def test_it_sees_messages_delivered_after_the_checkpoint(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1), raw_message(2))
    with opened(dovecot, mail_user) as folder:
        checkpoint = max(folder.all_uids())

    deliver(dovecot, mail_user, raw_message(3))
    with opened(dovecot, mail_user) as folder:
        new = folder.uids_after(checkpoint)
        [message] = folder.fetch(new, max_size=BIG)

    assert new == [3]
    assert message.raw == raw_message(3)


def test_it_batches_by_size_and_gives_a_huge_message_its_own_batch(dovecot, mail_user):
    sizes_kb = [10, 500, 200, 300, 40, 2048, 10, 10, 450, 120]
    deliver(dovecot, mail_user, *(sized(n, kb * KB) for n, kb in enumerate(sizes_kb)))

    with opened(dovecot, mail_user) as folder:
        uids = folder.uids_after(0)
        sizes = folder.sizes(uids)
        batches = list(folder.batches(uids, sizes, max_bytes=1024 * KB))

    assert [sizes[uid][0] for uid in uids] == [kb * KB for kb in sizes_kb]
    assert batches == [[1, 2, 3, 4], [5], [6], [7, 8, 9, 10]]
    assert [uid for batch in batches for uid in batch] == uids


def test_it_caps_the_number_of_messages_per_batch(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(5)))

    with opened(dovecot, mail_user) as folder:
        uids = folder.all_uids()
        batches = list(folder.batches(uids, folder.sizes(uids), max_count=2))

    assert batches == [[1, 2], [3, 4], [5]]


def test_it_asks_for_sizes_of_a_large_folder_in_chunks(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 1101)))

    with opened(dovecot, mail_user) as folder:
        sizes = folder.sizes(folder.uids_after(0))
        batches = list(folder.batches(sorted(sizes), sizes))

    assert len(sizes) == 1100
    assert all(size == len(raw_message(uid)) for uid, (size, _date) in sizes.items())
    assert [len(batch) for batch in batches] == [200] * 5 + [100]


@pytest.mark.parametrize("security", ["none", "ssl"])
def test_it_fetches_the_exact_bytes_the_server_holds(dovecot, mail_user, security):
    bare_lf = b"From: a@example.com\nSubject: Unix mail\n\nline one\nline two\n"
    dotted = raw_message(2) + b".\r\n..leading dots\r\n"
    no_final_newline = raw_message(3).rstrip(b"\r\n")
    deliver(dovecot, mail_user, bare_lf, dotted, no_final_newline)

    with opened(dovecot, mail_user, security=security) as folder:
        messages = folder.fetch(folder.uids_after(0), max_size=BIG)

    assert [m.uid for m in messages] == [1, 2, 3]
    for message in messages:
        assert message.raw == dovecot.fetch_raw(mail_user, message.uid)
        assert (message.size, message.truncated) == (len(message.raw), False)
    assert messages[0].raw == bare_lf.replace(b"\n", b"\r\n")  # Dovecot serves CRLF
    assert messages[1].raw == dotted


def test_it_reports_internaldate_in_utc_whatever_the_local_zone(dovecot, mail_user, monkeypatch):
    path = dovecot.deliver(mail_user, raw_message(1))
    received = datetime(2024, 3, 31, 1, 30, tzinfo=UTC)  # the night Europe moves clocks
    os.utime(path, (received.timestamp(), received.timestamp()))  # Maildir: mtime
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        with opened(dovecot, mail_user) as folder:
            [(_size, sized_date)] = folder.sizes([1]).values()
            [message] = folder.fetch([1], max_size=BIG)
    finally:
        monkeypatch.undo()
        time.tzset()

    assert message.internaldate == sized_date == received
    assert message.internaldate.tzinfo is UTC


def test_it_fetches_only_the_header_block_of_an_oversize_message(dovecot, mail_user):
    big = sized(2, 300 * KB)
    deliver(dovecot, mail_user, raw_message(1), big, raw_message(3))

    with opened(dovecot, mail_user) as folder:
        uids = folder.uids_after(0)
        folder.sizes(uids)
        messages = folder.fetch(uids, max_size=100 * KB)

    assert [(m.uid, m.truncated) for m in messages] == [(1, False), (2, True), (3, False)]
    assert messages[1].raw == big[: big.index(b"\r\n\r\n") + 4]
    assert messages[1].size == 300 * KB
    assert messages[2].raw == raw_message(3)


def test_it_finds_sizes_itself_when_not_asked_first(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1), sized(2, 50 * KB))

    with opened(dovecot, mail_user) as folder:
        messages = folder.fetch([1, 2], max_size=10 * KB)

    assert [(m.uid, m.truncated) for m in messages] == [(1, False), (2, True)]


def test_it_skips_a_message_expunged_meanwhile(dovecot, mail_user):
    deliver(dovecot, mail_user, *(sized(n, 20 * KB) for n in range(1, 4)))

    with opened(dovecot, mail_user) as folder:
        uids = folder.uids_after(0)
        sizes = folder.sizes(uids)
        with dovecot.imap(mail_user) as webmail:
            webmail.select_folder("INBOX")
            webmail.delete_messages([2])
            webmail.expunge()
        messages = folder.fetch(uids, max_size=BIG)
        remaining = folder.all_uids()

    assert [m.uid for m in messages] == [1, 3]
    assert [m.raw for m in messages] == [sized(1, 20 * KB), sized(3, 20 * KB)]
    assert sizes.keys() == {1, 2, 3}
    assert remaining == [1, 3]


def test_it_leaves_a_batch_of_expunged_messages_out(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1), raw_message(2))

    with opened(dovecot, mail_user) as folder:
        sizes = folder.sizes([1, 2])
        with dovecot.imap(mail_user) as webmail:
            webmail.select_folder("INBOX")
            webmail.delete_messages([1, 2])
            webmail.expunge()
        assert folder.fetch([1, 2], max_size=BIG) == []
        assert list(folder.batches([1, 2, 3], {**sizes, 3: (10, None)})) == [[1, 2, 3]]
        assert list(folder.batches([1, 2, 3], {3: 10})) == [[3]]


def test_it_reads_chosen_header_fields_without_marking_seen(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1), raw_message(2))

    with opened(dovecot, mail_user, readonly=False) as folder:
        headers = folder.headers([1, 2], ["Subject", "Message-ID"])

    assert headers == {
        1: b"Subject: Question 1\r\nMessage-ID: <question-1@example.com>\r\n\r\n",
        2: b"Subject: Question 2\r\nMessage-ID: <question-2@example.com>\r\n\r\n",
    }
    assert unseen(dovecot, mail_user) == [1, 2]


def test_it_refuses_a_header_field_that_is_not_a_name(dovecot, mail_user):
    with opened(dovecot, mail_user) as folder, pytest.raises(ValueError):
        folder.headers([1], ["Subject)] BODY[TEXT"])


def test_it_reads_without_marking_seen_and_marks_seen_when_told(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 4)))

    with opened(dovecot, mail_user, readonly=False) as folder:
        folder.fetch([1, 2, 3], max_size=BIG)
        assert unseen(dovecot, mail_user) == [1, 2, 3]
        folder.mark_seen([1, 3])

    assert unseen(dovecot, mail_user) == [2]


def test_it_moves_messages_into_an_existing_folder(dovecot, mail_user):
    dovecot.create_folder(mail_user, "Imported")
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 4)))

    with opened(dovecot, mail_user, readonly=False) as folder:
        folder.move([1, 3], "Imported")

    assert dovecot.folder_uids(mail_user) == [2]
    moved = [dovecot.fetch_raw(mail_user, uid, "Imported") for uid in (1, 2)]
    assert moved == [raw_message(1), raw_message(3)]


def test_it_moves_with_copy_and_uid_expunge_when_the_server_lacks_move(dovecot, mail_user):
    dovecot.create_folder(mail_user, "Imported")
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 4)))
    flag_deleted_elsewhere(dovecot, mail_user, 2)

    with opened(dovecot, mail_user, readonly=False) as folder:
        without(folder.client, "MOVE")
        folder.move([1], "Imported")

    assert dovecot.folder_uids(mail_user) == [2, 3]
    assert dovecot.fetch_raw(mail_user, 1, "Imported") == raw_message(1)


def test_it_names_a_missing_target_folder_and_moves_nothing(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1))

    for lacking in ([], ["MOVE"]):
        with opened(dovecot, mail_user, readonly=False) as folder:
            without(folder.client, *lacking)
            with pytest.raises(FolderMissing) as caught:
                folder.move([1], "Processed")

        assert str(caught.value).startswith("Folder 'Processed' does not exist on the server")
        assert caught.value.permanent
        assert dovecot.folder_uids(mail_user) == [1]


def test_it_deletes_only_the_given_uids(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 5)))
    # An agent deleted message 2 in webmail, which has not expunged yet (undo still possible).
    flag_deleted_elsewhere(dovecot, mail_user, 2)

    with opened(dovecot, mail_user, readonly=False) as folder:
        assert folder.client.has_capability("UIDPLUS")
        folder.delete([1, 3])

    assert dovecot.folder_uids(mail_user) == [2, 4]


def test_it_falls_back_to_expunge_without_uidplus(dovecot, mail_user):
    deliver(dovecot, mail_user, *(raw_message(n) for n in range(1, 4)))
    flag_deleted_elsewhere(dovecot, mail_user, 2)

    with opened(dovecot, mail_user, readonly=False) as folder:
        without(folder.client, "UIDPLUS")
        folder.delete([1])

    # Why UIDPLUS is preferred: plain EXPUNGE also took the message flagged elsewhere.
    assert dovecot.folder_uids(mail_user) == [3]


def test_it_refuses_to_change_a_folder_opened_read_only(dovecot, mail_user):
    deliver(dovecot, mail_user, raw_message(1))

    with opened(dovecot, mail_user) as folder:
        for act in (folder.mark_seen, folder.delete, lambda uids: folder.move(uids, "X")):
            with pytest.raises(ValueError, match="opened read-only"):
                act([1])

    assert dovecot.folder_uids(mail_user) == [1]


@pytest.mark.parametrize("security", ["none", "ssl"])
def test_it_reports_a_connection_cut_mid_fetch_as_a_provider_error(
    dovecot, mail_user, tcp_proxy, security
):
    deliver(dovecot, mail_user, raw_message(1), sized(2, 2 * 2**20))
    proxy = tcp_proxy(dovecot.ports.imaps if security == "ssl" else dovecot.ports.imap)

    opening = opened(dovecot, mail_user, security=security, port=proxy.port)
    with pytest.raises(ProtocolError) as caught, opening as folder:
        sizes = folder.sizes(folder.uids_after(0))
        proxy.cut_after(100_000)
        for batch in folder.batches(sorted(sizes), sizes):
            folder.fetch(batch, max_size=BIG)

    message = str(caught.value)
    assert message.startswith(f"The IMAP connection to 127.0.0.1 port {proxy.port} broke (")
    assert not caught.value.permanent
    assert not isinstance(caught.value.__cause__, ProviderError)


def test_it_reports_a_connection_dropped_between_commands(dovecot, mail_user, tcp_proxy):
    deliver(dovecot, mail_user, raw_message(1))
    proxy = tcp_proxy(dovecot.ports.imap)

    with opened(dovecot, mail_user, readonly=False, port=proxy.port) as folder:
        proxy.cut_all()
        for act in (lambda: folder.uids_after(0), lambda: folder.mark_seen([1])):
            with pytest.raises(ProtocolError, match="broke"):
                act()
        # A caller that catches and leaves the block still gets a ProviderError, no hang.
        with pytest.raises(ProviderError):
            folder.fetch([1], max_size=BIG)


# -- helpers -----------------------------------------------------------------------------------


def unseen(dovecot, user) -> list[int]:
    with dovecot.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        return sorted(client.search("UNSEEN"))


def flag_deleted_elsewhere(dovecot, user, uid: int) -> None:
    with dovecot.imap(user) as client:
        client.select_folder("INBOX")
        client.delete_messages([uid])
        client.unselect_folder()  # not CLOSE, which would expunge it


def without(client: IMAPClient, *capabilities: str) -> None:
    """Make the client believe the server lacks these, to run the fallbacks on a real server."""
    lacking = {c.upper() for c in capabilities}
    real = client.has_capability

    def has_capability(capability: str) -> bool:
        return capability.upper() not in lacking and real(capability)

    client.has_capability = has_capability
