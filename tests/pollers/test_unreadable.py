"""A message the server will not hand over: the mail around it still comes in, it is recorded
in its place, asked for again later, and never moved or deleted before it was read.

Dovecot refuses a message whose Maildir file it cannot open: over IMAP it answers the FETCH
with "* BYE" and hangs up, or (imap_fetch_failure = no-after, as other servers do) hands over
what it can and answers NO; over POP3 it answers the RETR with -ERR. Every test here runs
against both IMAP behaviours.
"""

from __future__ import annotations

import os
import poplib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import Case
from mailboxes.first_sync import first_sync_choose
from mailboxes.models import InboundMessage, Mailbox
from mailboxes.unreadable import REFETCH_DELAYS
from pollers.history import history_import_slice
from tests.pollers.conftest import message
from tests.servers.dovecot import start_dovecot

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module", params=["hangs up", "answers NO"])
def dovecot(request, tmp_path_factory):
    extra = "imap_fetch_failure = no-after\n" if request.param == "answers NO" else ""
    server = start_dovecot(tmp_path_factory.mktemp("dovecot-refusing"), extra_config=extra)
    yield server
    server.close()


def deliver(dovecot, user, *raws: bytes) -> None:
    for raw in raws:
        dovecot.deliver(user, raw)


def files(user) -> list:
    return [path for folder in ("cur", "new") for path in (user.maildir / folder).iterdir()]


def unreadable(user, subject: str) -> None:
    """Dovecot's mail processes run unprivileged: they cannot open the file now."""
    (path,) = [p for p in files(user) if f"Subject: {subject}\r\n".encode() in p.read_bytes()]
    os.chmod(path, 0)


def listed_over_pop3(dovecot, user) -> None:
    """A POP3 session that lists the messages: Dovecot caches their sizes, so a later one can
    list a message it cannot open (and refuse only its RETR, as other servers do)."""
    client = poplib.POP3_SSL(dovecot.host, dovecot.ports.pop3s, context=dovecot.ssl_context())
    client.user(user.name)
    client.pass_(user.password)
    client.uidl()
    client.list()
    client.quit()


def readable_again(user) -> None:
    for path in files(user):
        os.chmod(path, 0o600)


def due_now(row: InboundMessage) -> None:
    """The wait before the next request is over (as if the minutes had passed)."""
    InboundMessage.objects.filter(pk=row.pk).update(fetch_retry_at=timezone.now())


def ledger(mailbox: Mailbox) -> list[InboundMessage]:
    return list(InboundMessage.objects.filter(mailbox=mailbox).order_by("uid", "pk"))


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_the_mail_around_a_refused_message_comes_in_and_it_is_read_once_the_server_can(
    dovecot, mail_user, connected, poll, protocol
):
    mailbox = connected(protocol=protocol, after_import=Mailbox.AfterImport.DELETE)
    deliver(dovecot, mail_user, message(1), message(2), message(3))
    listed_over_pop3(dovecot, mail_user)
    unreadable(mail_user, "Order 2")

    result = poll(mailbox)

    assert not result.error, result.error  # the channel stays green
    rows = InboundMessage.objects.filter(mailbox=mailbox)
    refused = rows.get(outcome=InboundMessage.Outcome.FAILED)
    assert sorted(rows.exclude(pk=refused.pk).values_list("subject", flat=True)) == [
        "Order 1",
        "Order 3",
    ]
    assert Case.objects.filter(mailbox=mailbox).count() == 2
    assert refused.fetch_error and "would not hand this message over" in refused.outcome_reason
    assert "asks again at" in refused.outcome_reason
    # Read mail was deleted as the channel says; the refused message is still there.
    assert len(dovecot.folder_uids(mail_user)) == 1

    deliver(dovecot, mail_user, message(4))  # mail behind it is not held up
    assert poll(mailbox).stored == 1

    readable_again(mail_user)
    assert poll(mailbox).stored == 0  # not before its time
    due_now(refused)
    poll(mailbox)

    refused.refresh_from_db()
    assert (refused.fetch_error, refused.subject) == ("", "Order 2")
    assert refused.outcome == InboundMessage.Outcome.PROCESSED
    assert Case.objects.filter(mailbox=mailbox).count() == 4
    assert dovecot.folder_uids(mail_user) == []  # now read, and deleted like the others


def test_each_refusal_waits_longer_and_after_the_last_an_administrator_retries(
    dovecot, mail_user, connected, poll, admin_client
):
    mailbox = connected()
    deliver(dovecot, mail_user, message(1))
    unreadable(mail_user, "Order 1")
    poll(mailbox)
    row = InboundMessage.objects.get(mailbox=mailbox)
    waits = []
    for _ in REFETCH_DELAYS:
        due_now(row)
        poll(mailbox)
        row.refresh_from_db()
        if row.fetch_retry_at:
            waits.append(row.fetch_retry_at - timezone.now())
    minutes = [round(wait / timedelta(minutes=1)) for wait in waits]
    assert minutes == [delay // timedelta(minutes=1) for delay in REFETCH_DELAYS[1:]]
    assert row.fetch_retry_at is None and row.fetch_attempts == len(REFETCH_DELAYS) + 1
    assert "Asked 5 times" in row.outcome_reason and "Retry" in row.outcome_reason
    readable_again(mail_user)  # a poll does not ask again by itself now ...
    assert poll(mailbox).stored == 0

    # ... the administrator's "Retry" does.
    response = admin_client.post(
        reverse("admin:mailboxes_inboundmessage_retry", args=[row.pk]), follow=True
    )
    assert "asked for it again" in response.content.decode()
    poll(mailbox)
    row.refresh_from_db()
    assert row.outcome == InboundMessage.Outcome.PROCESSED and row.subject == "Order 1"


def test_a_message_gone_from_the_server_meanwhile_is_not_asked_for_again(
    dovecot, mail_user, connected, poll
):
    mailbox = connected()
    deliver(dovecot, mail_user, message(1))
    unreadable(mail_user, "Order 1")
    poll(mailbox)
    row = InboundMessage.objects.get(mailbox=mailbox)
    for path in files(mail_user):
        path.unlink()  # someone deleted it in webmail

    due_now(row)
    poll(mailbox)

    row.refresh_from_db()
    assert row.fetch_retry_at is None and "no longer on the server" in row.outcome_reason


def test_an_import_of_older_mail_records_the_refused_message_and_imports_the_rest(
    dovecot, mail_user, connected, poll
):
    deliver(dovecot, mail_user, *(message(n, subject="Older") for n in range(1, 6)))
    unreadable(mail_user, "Older 3")
    mailbox = connected(after_import=Mailbox.AfterImport.DELETE)  # for new mail, not history
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)

    while history_import_slice(mailbox_id=mailbox.pk).more:
        pass

    mailbox.refresh_from_db()
    assert mailbox.import_state == Mailbox.ImportState.DONE and mailbox.import_done == 5
    rows = ledger(mailbox)
    assert [bool(row.fetch_error) for row in rows] == [False, False, True, False, False]
    readable_again(mail_user)
    due_now(rows[2])
    poll(mailbox)
    rows[2].refresh_from_db()
    assert rows[2].subject == "Older 3" and not rows[2].fetch_error
    assert len(dovecot.folder_uids(mail_user)) == 5  # history stays on the server
