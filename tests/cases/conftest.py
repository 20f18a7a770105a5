"""Channels on the real Dovecot fixture, and mail written the way customers' clients write it."""

from __future__ import annotations

import itertools
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from django.utils import timezone

from cases.models import Case
from mailboxes.models import InboundMessage, Mailbox
from tests.pollers.conftest import connected, loopback_allowed, make_channel, poll  # noqa: F401

ACK = (
    "Hello {{ contact.name|default:'there' }}, we have your message: case [#{{ case.reference }}]."
)
MARKER = "##- Please type your reply above this line -##"
_numbers = itertools.count(1)


def mail(
    *,
    sender: str = "Carol Customer <carol@example.org>",
    to: str = "support@example.test",
    subject: str = "Broken kettle",
    body: str = "My kettle does not boil.",
    headers: dict | None = None,
    attachments: list[tuple[str, bytes]] = (),
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(idstring=str(next(_numbers)), domain="example.org")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    for filename, data in attachments:
        message.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    return message.as_bytes()


@pytest.fixture
def channel(dovecot, connected):  # noqa: F811
    """make(**fields): a connected IMAP channel on a user of its own, acknowledging new cases."""

    def make(**fields) -> Mailbox:
        fields = {"auto_ack_template": ACK, "end_of_message_marker": MARKER, **fields}
        user = dovecot.add_user()
        mailbox = connected(user, **fields)
        mailbox.mail_user = user  # where receive() delivers
        return mailbox

    return make


@pytest.fixture
def receive(dovecot, poll):  # noqa: F811
    """receive(channel, raw): deliver into the channel's Dovecot folder, poll, return the row."""

    def run(mailbox: Mailbox, raw: bytes) -> InboundMessage:
        dovecot.deliver(mailbox.mail_user, raw)
        result = poll(mailbox)
        assert result.stored == 1, result
        return InboundMessage.objects.filter(mailbox=mailbox).latest("pk")

    return run


def case_of(row: InboundMessage) -> Case:
    row.refresh_from_db()
    return Case.objects.get(pk=row.result["case"])
