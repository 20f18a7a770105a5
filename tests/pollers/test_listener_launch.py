"""`make run` starts the IMAP IDLE listener too: mail is stored at once by the running worker."""

from __future__ import annotations

import pytest

from tests.launch import query, run_manage, wait_until
from tests.pollers.conftest import message

CREATE_CHANNEL = """
from mailboxes.models import Mailbox
Mailbox.objects.create(
    name="Support", email_address="support@example.test", protocol="imap",
    incoming_host="127.0.0.1", incoming_port={port}, incoming_security="ssl",
    trust_self_signed=True, username="{user}", password="{password}",
    smtp_host="127.0.0.1", smtp_port=25, refresh_interval=3600,
)
"""
LOOPBACK = {"POSTROOM_BLOCKED_NETWORKS": "169.254.0.0/16"}


@pytest.mark.timeout(180)
def test_make_run_listens_and_the_worker_stores_mail_without_waiting_an_hour(
    launch, tmp_path, dovecot, mail_user
):
    run = launch(**LOOPBACK)
    run.wait_for(r"celery@\S+ ready")
    run.wait_for(r"Listening for new mail \(IMAP IDLE\)")
    run_manage(
        tmp_path,
        CREATE_CHANNEL.format(
            port=dovecot.ports.imaps, user=mail_user.name, password=mail_user.password
        ),
        **LOOPBACK,
    )

    # The dispatcher's first poll sets the cursor ("from now on"); the listener goes on push.
    wait_until(
        lambda: query(
            tmp_path,
            "select 1 from mailboxes_mailbox where cursor_set_at is not null and push_state = ?",
            "push",
        ),
        timeout=60,
        what="the channel to be connected and on push",
    )
    dovecot.deliver(mail_user, message(1, subject="Broken kettle"))

    # The next regular poll is an hour away: only the listener's wake-up can store it.
    rows = wait_until(
        lambda: query(
            tmp_path,
            "select subject, outcome from mailboxes_inboundmessage where outcome != 'pending'",
        ),
        timeout=60,
        what="the message to be stored",
    )
    assert rows == [("Broken kettle 1", "processed")]
    assert run.stop() == 0
    assert "Listener stopped." in run.output()
