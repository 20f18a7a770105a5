"""Channels wired to the real Dovecot fixture, for the mail-in stories."""

from __future__ import annotations

import itertools

import pytest
from django.db import transaction
from django.utils import timezone

from mailboxes.compose import Draft
from mailboxes.models import Mailbox
from mailboxes.outbox import outbound_enqueue
from pollers.services import mailbox_poll
from tests.pollers.listening import Listen

_numbers = itertools.count(1)


def message(n: int, *, subject: str = "Order", body: str = "Where is my order?") -> bytes:
    return (
        f"From: Carol Customer <carol{n}@example.org>\r\nTo: support@example.test\r\n"
        f"Subject: {subject} {n}\r\nMessage-ID: <msg-{n}-{next(_numbers)}@example.org>\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture(autouse=True)
def loopback_allowed(settings, tmp_path):
    settings.POSTROOM_BLOCKED_NETWORKS = ["169.254.0.0/16"]
    settings.POSTROOM_CONNECT_TIMEOUT = 5.0
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def make_channel(dovecot, mail_user):
    """A listening channel on the fixture user; `protocol` picks IMAPS or POP3S."""

    def make(user=None, *, protocol: str = "imap", **fields) -> Mailbox:
        user = user or mail_user
        port = dovecot.ports.imaps if protocol == "imap" else dovecot.ports.pop3s
        values = {
            "name": f"Support {user.name} {protocol}",
            "email_address": f"{protocol}-{user.address}",
            "protocol": protocol,
            "incoming_host": "127.0.0.1",
            "incoming_port": port,
            "incoming_security": "ssl",
            "trust_self_signed": True,
            "username": user.name,
            "password": user.password,
            "smtp_host": "127.0.0.1",
            "smtp_port": 25,
            **fields,
        }
        return Mailbox.objects.create(**values)

    return make


@pytest.fixture
def poll():
    """Poll a channel as a worker would, and return the result."""

    def run(mailbox: Mailbox):
        result = mailbox_poll(mailbox_id=mailbox.pk)
        mailbox.refresh_from_db()
        return result

    return run


@pytest.fixture
def connected(make_channel, poll):
    """A channel whose first poll has already set its cursor ("from now on")."""

    def make(*args, **kwargs) -> Mailbox:
        mailbox = make_channel(*args, **kwargs)
        poll(mailbox)
        assert mailbox.cursor_set_at is not None
        return mailbox

    return make


def now():
    return timezone.now()


# --- Mail out -------------------------------------------------------------------------------

MARKER = "##- Please type your reply above this line -##"


@pytest.fixture
def sender(make_channel, mail_user, smtp, dovecot):
    """make(**fields): an IMAP channel sending through the SMTP fixture over STARTTLS, with
    the copy to the Dovecot fixture's Sent folder on."""
    smtp.add_user(mail_user.address, mail_user.password)
    dovecot.create_folder(mail_user, "Sent")

    def make(**fields) -> Mailbox:
        values = {
            "email_address": mail_user.address,
            "from_name": "Support team",
            "smtp_port": smtp.starttls_port,
            "smtp_security": "starttls",
            "smtp_username": mail_user.address,
            "reply_to": "help@example.test",
            "sent_folder": "Sent",
            "copy_to_sent": True,
            "end_of_message_marker": MARKER,
            **fields,
        }
        return make_channel(**values)

    return make


def enqueue(mailbox: Mailbox, **draft_fields):
    """A reply put in the outbox the way a case will: in a transaction of its own."""
    values = {
        "to": ["carol@example.org"],
        "subject": "Re: Broken kettle",
        "text": "We are sending a new one.",
        **draft_fields,
    }
    with transaction.atomic():
        return outbound_enqueue(mailbox=mailbox, draft=Draft(**values))


# --- IMAP IDLE listener ---------------------------------------------------------------------


@pytest.fixture
def listen(transactional_db, tmp_path):
    """Start a listener: listen(), listen(eager=False), listen(POSTROOM_IDLE_...="...")."""
    started: list[Listen] = []

    def start(**options) -> Listen:
        started.append(Listen(tmp_path, **options))
        return started[-1]

    yield start
    for listener in started:
        if listener.process.poll() is None:
            listener.process.kill()
            listener.process.wait()
