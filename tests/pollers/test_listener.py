"""Mail in at once: `manage.py listen` holds an IMAP IDLE connection per channel and has a
channel polled the moment Dovecot announces new mail, whatever the channel's refresh interval.

The listener runs as its own process against the test database; Dovecot is the real one.
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from mailboxes.models import Mailbox
from mailboxes.services import mailbox_set_online
from tests.launch import wait_until
from tests.pollers.conftest import message
from tests.pollers.listening import wait_for_push, wait_for_stored
from tests.servers.dovecot import Dovecot

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600
# Dovecot's capabilities without IDLE, for a server that does not offer it.
NO_IDLE = "imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS\n"


def test_mail_delivered_to_a_listened_channel_is_stored_at_once(
    connected, dovecot, mail_user, listen
):
    support = connected(refresh_interval=HOUR)
    listen()
    wait_for_push(support)

    dovecot.deliver(mail_user, message(1, subject="Broken kettle"))

    # Nothing else polls: no beat runs, and the refresh interval is an hour.
    assert wait_for_stored(support) == ["Broken kettle 1"]


def test_it_survives_the_server_hanging_up_and_a_dovecot_restart(
    connected, dovecot, mail_user, listen, tcp_proxy
):
    proxy = tcp_proxy(dovecot.ports.imap)
    support = connected(incoming_port=proxy.port, incoming_security="none", refresh_interval=HOUR)
    listener = listen()
    first = wait_for_push(support)

    proxy.cut_all(reset=False)
    second = wait_for_push(support, after=first)
    dovecot.restart()
    wait_for_push(support, after=second)

    dovecot.deliver(mail_user, message(1, subject="Still there?"))
    assert wait_for_stored(support) == ["Still there? 1"]
    assert "Traceback" not in listener.output()


def test_it_follows_channels_added_and_deleted_while_it_runs(connected, dovecot, listen, tcp_proxy):
    alice, bob = dovecot.add_user(), dovecot.add_user()
    proxy = tcp_proxy(dovecot.ports.imap)
    old = connected(alice, incoming_port=proxy.port, incoming_security="none")
    listen()
    wait_for_push(old)

    new = connected(bob, refresh_interval=HOUR)
    wait_for_push(new)
    old.delete()

    wait_until(lambda: proxy.open_connections == 0, timeout=30, what="a logout from the old one")
    dovecot.deliver(bob, message(1, subject="Hello new channel"))
    assert wait_for_stored(new) == ["Hello new channel 1"]


def test_an_edited_channel_is_reconnected_and_one_taken_offline_let_go(
    connected, dovecot, mail_user, listen, tcp_proxy
):
    before, after = tcp_proxy(dovecot.ports.imap), tcp_proxy(dovecot.ports.imap)
    support = connected(incoming_port=before.port, incoming_security="none")
    listen()
    wait_for_push(support)

    support.incoming_port = after.port
    support.save()

    wait_until(
        lambda: (before.open_connections, after.open_connections) == (0, 1),
        timeout=30,
        what="the listener to move to the new port",
    )
    mailbox_set_online(mailbox=support, online=False)
    wait_until(lambda: after.open_connections == 0, timeout=30, what="a logout when offline")
    support.refresh_from_db()
    assert support.push_state == Mailbox.PushState.NONE
    assert support.idle_lease_owner == ""


@pytest.fixture(scope="module")
def dovecot_without_idle(tmp_path_factory):
    server = Dovecot(tmp_path_factory.mktemp("dovecot-no-idle"), extra_config=NO_IDLE)
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_a_server_without_idle_keeps_the_channel_polling_and_the_page_says_so(
    make_channel, dovecot_without_idle, listen, admin_client
):
    user = dovecot_without_idle.add_user()
    support = make_channel(user, incoming_port=dovecot_without_idle.ports.imaps)
    listen()

    def polling():
        support.refresh_from_db()
        return support.push_reason == Mailbox.PushReason.UNSUPPORTED

    wait_until(polling, timeout=30, what="the listener to find no IDLE")
    page = admin_client.get(f"/admin/mailboxes/mailbox/{support.pk}/change/")

    text = page.content.decode()
    assert "Polling every 60 s since" in text
    assert f"127.0.0.1 port {dovecot_without_idle.ports.imaps} does not offer IMAP IDLE" in text
    assert support.push_state == Mailbox.PushState.POLLING


def test_the_page_of_a_channel_on_push_says_since_when(connected, listen, admin_client):
    support = connected()
    listen()
    since = wait_for_push(support)

    page = admin_client.get(f"/admin/mailboxes/mailbox/{support.pk}/change/")

    assert f"Push (IMAP IDLE) since {since:%Y-%m-%d %H:%M:%S}" in page.content.decode()


def test_a_channel_whose_password_cannot_be_read_does_not_keep_the_others_off_push(
    connected, dovecot, listen
):
    broken, fine = connected(dovecot.add_user()), connected(dovecot.add_user())
    with connection.cursor() as cursor:  # encrypted under a key Postroom no longer has
        cursor.execute(
            "update mailboxes_mailbox set password = %s where id = %s",
            [Fernet(Fernet.generate_key()).encrypt(b"hunter2-plaintext").decode(), broken.pk],
        )
    listen()

    wait_for_push(fine)

    def reported():
        broken.refresh_from_db(fields=["push_state", "push_reason", "push_detail"])
        return broken.push_reason == Mailbox.PushReason.ERROR and broken.push_detail

    assert "could not use the channel's settings" in wait_until(reported, what="the error")
    assert "hunter2" not in broken.push_detail
