"""Mail in over POP3: UIDL-tracked, stored once, deleted only after it is committed."""

from __future__ import annotations

import pytest

from mailboxes.models import InboundMessage, Mailbox
from tests.pollers.conftest import message

pytestmark = pytest.mark.django_db


def rows(mailbox):
    return InboundMessage.objects.filter(mailbox=mailbox)


def test_a_new_pop3_channel_leaves_what_is_there(dovecot, mail_user, make_channel, poll):
    dovecot.deliver(mail_user, message(0))
    mailbox = make_channel(protocol="pop3")
    poll(mailbox)
    assert not rows(mailbox).exists()
    assert "1 message(s) already on the server" in mailbox.cursor_note


def test_leave_on_server_polled_repeatedly_stores_each_message_once(
    dovecot, mail_user, connected, poll
):
    mailbox = connected(protocol="pop3")
    dovecot.deliver(mail_user, message(1))
    dovecot.deliver(mail_user, message(2, body="bare\nLF\n"))
    for _ in range(3):
        poll(mailbox)
    stored = list(rows(mailbox))
    assert len(stored) == 2
    on_server = {dovecot.fetch_raw(mail_user, uid) for uid in dovecot.folder_uids(mail_user)}
    assert {row.raw_bytes() for row in stored} == on_server
    assert len(dovecot.folder_uids(mail_user)) == 2


def test_delete_removes_only_committed_messages(dovecot, mail_user, connected, poll):
    dovecot.deliver(mail_user, message(0))  # before the channel: must stay
    mailbox = connected(protocol="pop3", after_import=Mailbox.AfterImport.DELETE)
    dovecot.deliver(mail_user, message(1))
    poll(mailbox)
    assert rows(mailbox).count() == 1
    assert rows(mailbox).get().server_action_done
    remaining = [dovecot.fetch_raw(mail_user, uid) for uid in dovecot.folder_uids(mail_user)]
    assert len(remaining) == 1 and b"Order 0" in remaining[0]


def test_a_crash_before_quit_deletes_nothing_and_the_next_poll_finishes(
    dovecot, mail_user, connected, poll, monkeypatch
):
    import pollers.fetch

    mailbox = connected(protocol="pop3", after_import=Mailbox.AfterImport.DELETE)
    dovecot.deliver(mail_user, message(1))

    def die(*args, **kwargs):
        raise SystemExit("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(pollers.fetch, "_pop3_act", die)
        with pytest.raises(SystemExit):
            poll(mailbox)
    assert rows(mailbox).count() == 1
    assert len(dovecot.folder_uids(mail_user)) == 1

    poll(mailbox)
    assert rows(mailbox).count() == 1
    assert dovecot.folder_uids(mail_user) == []


def test_a_line_longer_than_poplibs_limit_is_read(dovecot, mail_user, connected, poll):
    mailbox = connected(protocol="pop3")
    dovecot.deliver(mail_user, message(1, body="z" * 50_000))
    poll(mailbox)
    assert b"z" * 50_000 in rows(mailbox).get().raw_bytes()
