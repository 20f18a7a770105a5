"""The whole chain as `make run` runs it: beat → dispatcher → worker → stored and processed."""

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
    smtp_host="127.0.0.1", smtp_port=25,
)
"""
FETCH_NOW = """
from django.db import transaction
from mailboxes.models import Mailbox
from mailboxes.services import mailbox_fetch_now
with transaction.atomic():
    mailbox_fetch_now(mailbox=Mailbox.objects.get(name="Support"))
"""
LOOPBACK = {"POSTROOM_BLOCKED_NETWORKS": "169.254.0.0/16"}


@pytest.mark.timeout(180)
def test_mail_delivered_to_the_server_is_stored_by_the_running_worker(
    launch, tmp_path, dovecot, mail_user
):
    run = launch(**LOOPBACK)
    run.wait_for(r"celery@\S+ ready")
    run.wait_for(r"beat: Starting")
    run_manage(
        tmp_path,
        CREATE_CHANNEL.format(
            port=dovecot.ports.imaps, user=mail_user.name, password=mail_user.password
        ),
        **LOOPBACK,
    )

    # Beat's dispatcher finds the new channel due at once; its first poll sets the cursor.
    wait_until(
        lambda: query(tmp_path, "select cursor_set_at from mailboxes_mailbox")[0][0],
        timeout=60,
        what="the first poll to connect the channel",
    )

    dovecot.deliver(mail_user, message(1, subject="Broken kettle"))
    run_manage(tmp_path, FETCH_NOW, **LOOPBACK)  # the admin's "Fetch now"
    rows = wait_until(
        lambda: query(tmp_path, "select subject, outcome from mailboxes_inboundmessage"),
        timeout=60,
        what="the message to be stored",
    )
    assert rows == [("Broken kettle 1", "processed")]
    assert run.stop() == 0
