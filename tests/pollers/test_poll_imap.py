"""Mail in over IMAP: stored first, exactly once, and only then touched on the server."""

from __future__ import annotations

import os
import time

import pytest
from imapclient import IMAPClient

from mailboxes.models import InboundMessage, Mailbox
from mailboxes.services import mailbox_cursor_reset
from providers.errors import ProtocolError
from providers.imap_folder import ImapFolder
from tests.pollers.conftest import message

pytestmark = pytest.mark.django_db


def stored(mailbox: Mailbox) -> list[InboundMessage]:
    return list(InboundMessage.objects.filter(mailbox=mailbox).order_by("uid"))


def test_a_new_channel_starts_from_now_and_leaves_history_alone(
    dovecot, mail_user, make_channel, poll
):
    for n in range(3):
        dovecot.deliver(mail_user, message(n))
    mailbox = make_channel()

    result = poll(mailbox)

    assert result.stored == 0 and not stored(mailbox)
    assert "3 message(s) already there were left as they are" in mailbox.cursor_note
    assert len(dovecot.folder_uids(mail_user)) == 3


def test_new_mail_is_stored_with_the_bytes_the_server_returns(dovecot, mail_user, connected, poll):
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    dovecot.deliver(mail_user, message(2, body="Line one\nbare LF\n"))  # Dovecot adds CR

    result = poll(mailbox)

    rows = stored(mailbox)
    assert result.stored == 2 and len(rows) == 2
    for row in rows:
        assert row.raw_bytes() == dovecot.fetch_raw(mail_user, row.uid)
        assert row.uidvalidity == mailbox.uidvalidity
        assert row.outcome == InboundMessage.Outcome.PROCESSED
        assert row.sender.startswith("Carol Customer")
    assert mailbox.last_uid == rows[-1].uid
    assert mailbox.status == Mailbox.Status.OK
    assert mailbox.last_poll_stored == 2


def test_polling_again_stores_nothing_twice(dovecot, mail_user, connected, poll):
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    poll(mailbox)
    dovecot.deliver(mail_user, message(2))
    poll(mailbox)
    assert len(stored(mailbox)) == 2


def test_leave_on_server_changes_no_flags(dovecot, mail_user, connected, poll):
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    with dovecot.imap(mail_user) as client:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search("ALL"))
    assert all(b"\\Seen" not in f for f in flags.values())


def test_mark_seen_after_import(dovecot, mail_user, connected, poll):
    mailbox = connected(after_import=Mailbox.AfterImport.SEEN)
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    with dovecot.imap(mail_user) as client:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search("ALL"))
    assert [b"\\Seen" in f for f in flags.values()] == [True]
    assert stored(mailbox)[0].server_action_done


def test_move_after_import(dovecot, mail_user, connected, poll):
    dovecot.create_folder(mail_user, "Imported")
    mailbox = connected(after_import=Mailbox.AfterImport.MOVE, move_to_folder="Imported")
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    assert dovecot.folder_uids(mail_user) == []
    assert len(dovecot.folder_uids(mail_user, "Imported")) == 1


def test_delete_after_import_removes_only_what_was_stored(dovecot, mail_user, connected, poll):
    dovecot.deliver(mail_user, message(0))  # history: before the channel was connected
    mailbox = connected(after_import=Mailbox.AfterImport.DELETE)
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    assert len(stored(mailbox)) == 1
    assert len(dovecot.folder_uids(mail_user)) == 1  # the history message is still there


def test_a_move_broken_between_copy_and_delete_never_leaves_a_second_copy(
    dovecot, mail_user, connected, poll, monkeypatch
):
    """A server without MOVE (RFC 6851): COPY, then \\Deleted and UID EXPUNGE. The connection
    breaks after the COPY; the next poll only deletes what was copied."""
    real_has = IMAPClient.has_capability
    monkeypatch.setattr(
        IMAPClient, "has_capability", lambda self, name: name != "MOVE" and real_has(self, name)
    )
    real_delete, broken = ImapFolder._delete, []

    def delete_once_broken(self, uids):
        if not broken:
            broken.append(uids)
            raise ProtocolError("The IMAP connection broke (test).")
        real_delete(self, uids)

    monkeypatch.setattr(ImapFolder, "_delete", delete_once_broken)
    dovecot.create_folder(mail_user, "Imported")
    mailbox = connected(after_import=Mailbox.AfterImport.MOVE, move_to_folder="Imported")
    dovecot.deliver(mail_user, message(1))

    poll(mailbox)
    assert broken and len(dovecot.folder_uids(mail_user, "Imported")) == 1
    assert len(dovecot.folder_uids(mail_user)) == 1  # copied, not yet removed

    poll(mailbox)
    assert dovecot.folder_uids(mail_user) == []
    assert len(dovecot.folder_uids(mail_user, "Imported")) == 1  # and only one copy
    assert stored(mailbox)[0].server_action_done


def test_a_move_to_a_missing_folder_turns_red_but_keeps_the_mail(
    dovecot, mail_user, connected, poll
):
    mailbox = connected(after_import=Mailbox.AfterImport.MOVE, move_to_folder="Nowhere")
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    assert len(stored(mailbox)) == 1
    assert mailbox.status == Mailbox.Status.ERROR and "Nowhere" in mailbox.last_error

    dovecot.create_folder(mail_user, "Nowhere")
    poll(mailbox)  # the next poll finishes the pending move
    assert len(dovecot.folder_uids(mail_user, "Nowhere")) == 1
    assert len(stored(mailbox)) == 1
    assert mailbox.status == Mailbox.Status.OK


def test_a_worker_dying_between_store_and_action_loses_and_doubles_nothing(
    dovecot, mail_user, connected, poll, monkeypatch
):
    import pollers.fetch

    mailbox = connected(after_import=Mailbox.AfterImport.DELETE)
    dovecot.deliver(mail_user, message(1))

    real_act = pollers.fetch._imap_act

    def die_before_acting(mailbox, folder, rows):
        if rows:
            raise SystemExit("worker killed")
        return real_act(mailbox, folder, rows)

    with monkeypatch.context() as patch:
        patch.setattr(pollers.fetch, "_imap_act", die_before_acting)
        with pytest.raises(SystemExit):
            poll(mailbox)
    assert len(stored(mailbox)) == 1
    assert len(dovecot.folder_uids(mail_user)) == 1  # not deleted: the action never ran

    poll(mailbox)
    assert len(stored(mailbox)) == 1
    assert dovecot.folder_uids(mail_user) == []


def test_a_message_over_the_size_cap_is_kept_as_headers_and_a_note(
    dovecot, mail_user, connected, poll
):
    mailbox = connected(max_message_size=10_000)
    dovecot.deliver(mail_user, message(1, body="x" * 50_000))
    poll(mailbox)
    row = stored(mailbox)[0]
    assert row.truncated
    assert b"Subject: Order 1" in row.raw_bytes() and b"xxxx" not in row.raw_bytes()
    assert "size cap" in row.outcome_reason


def test_large_messages_go_to_file_storage(dovecot, mail_user, connected, poll, settings):
    settings.POSTROOM_RAW_INLINE_MAX = 1000
    mailbox = connected()
    dovecot.deliver(mail_user, message(1, body="y" * 5000))
    poll(mailbox)
    row = stored(mailbox)[0]
    assert row.raw is None and row.raw_file.name.startswith("raw/")
    assert row.raw_bytes() == dovecot.fetch_raw(mail_user, row.uid)


def test_uidvalidity_change_stores_nothing_twice_and_new_mail_still_arrives(
    dovecot, mail_user, connected, poll
):
    history = dovecot.deliver(mail_user, message(100))  # there for days before the channel
    three_days_ago = time.time() - 3 * 86400
    os.utime(history, (three_days_ago, three_days_ago))  # Maildir INTERNALDATE is the mtime
    mailbox = connected()
    for n in range(3):
        dovecot.deliver(mail_user, message(n))
    poll(mailbox)
    old_uidvalidity = mailbox.uidvalidity

    dovecot.renumber(mail_user)  # Dovecot forgets its UIDs: a new UIDVALIDITY
    dovecot.deliver(mail_user, message(9))
    poll(mailbox)

    assert mailbox.uidvalidity != old_uidvalidity
    rows = InboundMessage.objects.filter(mailbox=mailbox)
    assert rows.count() == 4  # 3 recognised, 1 new; the old history message still skipped
    assert not rows.filter(subject__startswith="Order 100").exists()
    assert "UIDVALIDITY" in mailbox.cursor_note
    assert rows.filter(uidvalidity=mailbox.uidvalidity).count() == 1


def test_a_wrong_password_turns_red_and_backs_off(dovecot, mail_user, connected, poll, caplog):
    mailbox = connected()
    Mailbox.objects.filter(pk=mailbox.pk).update(password="wrong")
    mailbox.refresh_from_db()

    poll(mailbox)
    first_retry = mailbox.next_poll_at
    assert mailbox.status == Mailbox.Status.ERROR
    assert "refused the username or password" in mailbox.last_error
    assert first_retry is not None

    poll(mailbox)
    assert mailbox.consecutive_failures == 2
    assert mailbox.next_poll_at - mailbox.last_polled_at > first_retry - mailbox.last_error_at
    assert sum("poll failed" in r.message for r in caplog.records) == 1  # per state, not attempt


def test_changing_the_folder_restarts_from_now_and_says_so(dovecot, mail_user, connected, poll):
    mailbox = connected()
    dovecot.create_folder(mail_user, "Support")
    dovecot.deliver(mail_user, message(1), folder="Support")

    note = mailbox_cursor_reset(mailbox=mailbox, changed=["folder"])
    Mailbox.objects.filter(pk=mailbox.pk).update(folder="Support")
    mailbox.refresh_from_db()
    assert note.startswith("Mailbox folder changed") and mailbox.cursor_set_at is None

    poll(mailbox)
    assert not stored(mailbox)  # what was already in the new folder stays history
    dovecot.deliver(mail_user, message(2), folder="Support")
    poll(mailbox)
    assert len(stored(mailbox)) == 1
