"""First sync: a read-only preview of the folder, then the administrator's choice of older mail
("from now on", "the last N days", "everything") imported in the background, cancellable,
beside new mail that keeps arriving."""

from __future__ import annotations

import email.utils
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from channels_app.celery import app as celery_app
from mailboxes.first_sync import first_sync_cancel, first_sync_choose, import_progress
from mailboxes.models import InboundMessage, Mailbox
from mailboxes.preview import mailbox_preview
from mailboxes.services import mailbox_cursor_reset
from pollers.history import history_import_slice, history_stalled
from tests.pollers.conftest import message

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC)


def deliver_at(dovecot, user, raw: bytes, when: datetime) -> None:
    """Deliver with an arrival time: Dovecot takes a Maildir file's mtime as INTERNALDATE;
    the Date header (what POP3 has to go on) says the same."""
    raw = f"Date: {email.utils.format_datetime(when)}\r\n".encode() + raw
    path = dovecot.deliver(user, raw)
    os.utime(path, (when.timestamp(), when.timestamp()))


def mail(sender: str, n: int, *extra: str) -> bytes:
    headers = "".join(f"{line}\r\n" for line in extra)
    return (
        f"From: {sender}\r\nTo: support@example.test\r\nSubject: Older {n}\r\n"
        f"Message-ID: <older-{n}-{sender.split('@')[0]}@example.org>\r\n{headers}\r\n"
        f"Body {n}\r\n"
    ).encode()


def flags(dovecot, user) -> dict:
    with dovecot.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        return client.get_flags(client.search("ALL"))


def import_all(mailbox: Mailbox, *, slice_seconds: float = 30) -> int:
    slices = 1
    while history_import_slice(mailbox_id=mailbox.pk, slice_seconds=slice_seconds).more:
        slices += 1
    mailbox.refresh_from_db()
    return slices


@pytest.fixture
def known_folder(dovecot, mail_user):
    """12 messages over 200 days: 5 from alice, 4 from bob, 3 automatic ones."""
    ages = iter(range(0, 240, 20))  # days ago: 0, 20, ..., 220
    for n in range(5):
        deliver_at(
            dovecot, mail_user, mail("Alice <alice@example.org>", n), NOW - timedelta(next(ages))
        )
    for n in range(4):
        deliver_at(dovecot, mail_user, mail("bob@example.org", n), NOW - timedelta(next(ages)))
    automatic = [
        mail("robot@example.org", 1, "Auto-Submitted: auto-replied"),
        mail("news@example.org", 2, "List-Id: <news.example.org>", "Precedence: list"),
        mail("MAILER-DAEMON@example.org", 3),
    ]
    for raw in automatic:
        deliver_at(dovecot, mail_user, raw, NOW - timedelta(next(ages)))
    return mail_user


def test_the_preview_counts_the_folder_and_changes_nothing(dovecot, known_folder, connected):
    mailbox = connected()
    before = flags(dovecot, known_folder)

    preview = mailbox_preview(mailbox=mailbox)

    assert preview.total == 12
    assert preview.automatic == 3
    assert preview.top_senders[:2] == [("alice@example.org", 5), ("bob@example.org", 4)]
    assert (NOW - preview.earliest).days == 220 and (NOW - preview.latest).days == 0
    assert preview.within_days[30] == 2 and preview.within_days[365] == 12
    assert flags(dovecot, known_folder) == before  # no \Seen, nothing moved
    assert not InboundMessage.objects.filter(mailbox=mailbox).exists()


def test_the_preview_page_shows_the_figures_and_records_the_choice(
    admin_client, known_folder, connected, django_capture_on_commit_callbacks
):
    mailbox = connected()
    change_url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    url = reverse("admin:mailboxes_mailbox_first_sync", args=[mailbox.pk])
    assert url in admin_client.get(change_url).content.decode()  # offered on the channel page

    page = admin_client.get(url).content.decode()
    assert '<td id="preview-total">12</td>' in page
    assert "alice@example.org" in page and "3 (auto-replies" in page

    response = admin_client.post(url, {"choice": "days", "days": ""})
    assert "Say how many days" in response.content.decode()
    with django_capture_on_commit_callbacks():
        response = admin_client.post(url, {"choice": "days", "days": "45"}, follow=True)
    mailbox.refresh_from_db()
    assert mailbox.first_sync == Mailbox.FirstSync.DAYS and mailbox.first_sync_days == 45
    assert mailbox.first_sync_chosen_at is not None
    assert mailbox.import_state == Mailbox.ImportState.QUEUED
    assert "Importing the last 45 days" in response.content.decode()


def test_from_now_on_imports_nothing_and_is_recorded(known_folder, connected):
    mailbox = connected()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.FROM_NOW)
    mailbox.refresh_from_db()
    assert mailbox.first_sync_chosen_at is not None and mailbox.import_state == ""
    assert not InboundMessage.objects.filter(mailbox=mailbox).exists()


def test_last_n_days_imports_exactly_the_window_and_leaves_it_on_the_server(
    dovecot, known_folder, connected, poll
):
    mailbox = connected(after_import=Mailbox.AfterImport.DELETE)
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.DAYS, days=50)

    import_all(mailbox)

    subjects = sorted(
        InboundMessage.objects.filter(mailbox=mailbox).values_list("subject", flat=True)
    )
    assert subjects == ["Older 0", "Older 1", "Older 2"]  # 0, 20 and 40 days old
    assert mailbox.import_state == Mailbox.ImportState.DONE
    assert mailbox.import_done == mailbox.import_total == 3
    assert "Imported 3 older message(s)" in import_progress(mailbox)
    assert len(dovecot.folder_uids(known_folder)) == 12  # history stays where it was
    assert poll(mailbox).stored == 0  # and the next poll does not fetch it again


def test_everything_runs_in_slices_with_progress_while_new_mail_keeps_arriving(
    dovecot, mail_user, connected, poll
):
    body = "x" * 2000
    for n in range(1000):
        dovecot.deliver(mail_user, message(n, body=body))
    mailbox = connected()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)
    progress: list[int] = []

    slices = 1
    while history_import_slice(mailbox_id=mailbox.pk, slice_seconds=0.5).more:
        slices += 1
        mailbox.refresh_from_db()
        progress.append(mailbox.import_done)
        if len(progress) == 2:
            running_text = import_progress(mailbox)
            # A poll between slices takes new mail at once, not after the import.
            dovecot.deliver(mail_user, message(99999, subject="Arrived meanwhile"))
            assert poll(mailbox).stored == 1

    mailbox.refresh_from_db()
    assert slices > 2 and progress == sorted(progress) and 0 < progress[0] < 1000
    assert "/ 1,000 imported" in running_text and "left" in running_text
    assert mailbox.import_state == Mailbox.ImportState.DONE and mailbox.import_done == 1000
    rows = InboundMessage.objects.filter(mailbox=mailbox)
    assert rows.count() == 1001 and rows.filter(subject="Arrived meanwhile 99999").count() == 1


@pytest.mark.backends
@pytest.mark.django_db(transaction=True)
def test_an_import_is_cancelled_from_another_process_and_keeps_what_it_stored(
    dovecot, mail_user, connected
):
    for n in range(600):
        dovecot.deliver(mail_user, message(n))
    mailbox = connected()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)
    worker = threading.Thread(target=import_all, args=(Mailbox.objects.get(pk=mailbox.pk),))
    worker.start()
    deadline = time.monotonic() + 60
    while Mailbox.objects.get(pk=mailbox.pk).import_done == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert first_sync_cancel(mailbox=mailbox)
    worker.join(60)

    mailbox.refresh_from_db()
    stored = InboundMessage.objects.filter(mailbox=mailbox).count()
    assert mailbox.import_state == Mailbox.ImportState.CANCELLED
    assert 0 < stored < 600 and stored == mailbox.import_done
    assert "Cancelled by an administrator" in import_progress(mailbox)


def test_a_new_folder_offers_the_choice_again_and_stops_a_running_import(known_folder, connected):
    mailbox = connected()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)

    mailbox_cursor_reset(mailbox=mailbox, changed=["folder"])

    mailbox.refresh_from_db()
    assert mailbox.first_sync_chosen_at is None
    assert mailbox.first_sync == Mailbox.FirstSync.FROM_NOW
    assert mailbox.import_state == Mailbox.ImportState.CANCELLED
    assert "folder changed" in mailbox.import_message


@pytest.mark.backends
def test_a_lost_import_task_is_found_and_finished_by_beat(known_folder, connected, settings):
    mailbox = connected()
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)
    assert history_stalled() == []  # just queued: its task is on the way
    later = NOW + timedelta(minutes=10)
    assert history_stalled(now=later) == [mailbox.pk]  # the broker lost it

    celery_app.conf.task_always_eager = True
    try:
        from pollers.tasks import import_history

        import_history.delay(mailbox.pk)
    finally:
        celery_app.conf.task_always_eager = False
    mailbox.refresh_from_db()
    assert mailbox.import_state == Mailbox.ImportState.DONE
    assert InboundMessage.objects.filter(mailbox=mailbox).count() == 12


def test_pop3_everything_imports_what_was_there_before_the_channel(
    dovecot, known_folder, make_channel, poll
):
    mailbox = make_channel(protocol="pop3")
    poll(mailbox)  # the first poll records what is already there as history
    dovecot.deliver(known_folder, message(1, subject="New"))
    assert poll(mailbox).stored == 1
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.EVERYTHING)

    import_all(mailbox)

    assert mailbox.import_state == Mailbox.ImportState.DONE and mailbox.import_done == 12
    assert InboundMessage.objects.filter(mailbox=mailbox).count() == 13
    assert poll(mailbox).stored == 0


def test_pop3_last_n_days_goes_by_the_date_header(dovecot, known_folder, make_channel, poll):
    mailbox = make_channel(protocol="pop3")
    poll(mailbox)
    first_sync_choose(mailbox=mailbox, choice=Mailbox.FirstSync.DAYS, days=50)

    import_all(mailbox)

    subjects = sorted(
        InboundMessage.objects.filter(mailbox=mailbox).values_list("subject", flat=True)
    )
    assert subjects == ["Older 0", "Older 1", "Older 2"]
    assert "Imported 3 older message(s); 9 dated before the window" in mailbox.import_message
    assert poll(mailbox).stored == 0
