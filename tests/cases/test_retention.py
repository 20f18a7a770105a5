"""Data kept, and for how long: retention purges bytes, erasing a contact leaves a tombstone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.utils import timezone

from cases.models import Attachment, Case, CaseMessage, Contact
from cases.retention import retention_purge
from mailboxes.models import ErasedMessage, InboundMessage, Mailbox
from tests.cases.conftest import case_of, mail

pytestmark = pytest.mark.django_db


def test_retention_deletes_old_raw_mail_and_files_and_keeps_the_case_text(channel, receive):
    support = channel(retention_days=30)
    keeper = channel()  # no retention: keeps everything
    old = receive(support, mail(attachments=[("invoice.pdf", b"%PDF-1")]))
    kept = receive(keeper, mail(attachments=[("invoice.pdf", b"%PDF-1")]))
    file_name = Attachment.objects.get(message__case=case_of(old)).file.name

    retention_purge(now=timezone.now() + timedelta(days=31))

    old.refresh_from_db()
    assert old.raw is None and old.raw_purged_at is not None
    assert case_of(old).messages.first().text == "My kettle does not boil."
    attachment = Attachment.objects.get(message__case=case_of(old))
    assert (attachment.file.name, attachment.filename) == ("", "invoice.pdf")
    assert attachment.purged_at is not None
    assert not default_storage.exists(file_name)
    assert kept.raw_bytes()
    assert Attachment.objects.get(message__case=case_of(kept)).file


def test_mail_inside_the_retention_stays(channel, receive):
    support = channel(retention_days=30)
    row = receive(support, mail())

    retention_purge(now=timezone.now() + timedelta(days=29))

    assert row.raw_bytes()


def test_erasing_a_contact_removes_their_mail_and_a_refetch_does_not_bring_it_back(
    channel, receive, client, dovecot, poll
):
    support = channel()
    raw = mail(attachments=[("passport.pdf", b"%PDF-secret")])
    row = receive(support, raw)
    other = receive(support, mail(sender="dave@example.org"))
    file_name = Attachment.objects.get(message__case=case_of(row)).file.name
    carol = Contact.objects.get(address="carol@example.org")
    admin = User.objects.create_superuser("admin", "admin@example.test", "pw")
    client.force_login(admin)

    client.post(
        "/admin/cases/contact/",
        {"action": "erase", "_selected_action": [carol.pk]},
        follow=True,
    )

    assert not Contact.objects.filter(address="carol@example.org").exists()
    assert not Case.objects.filter(address="carol@example.org").exists()
    assert not InboundMessage.objects.filter(pk=row.pk).exists()
    assert not default_storage.exists(file_name)
    assert ErasedMessage.objects.filter(sha256=row.sha256).exists()
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(carol.pk)).exists()
    assert case_of(other).address == "dave@example.org"
    assert CaseMessage.objects.filter(sender="dave@example.org").exists()

    Mailbox.objects.filter(pk=support.pk).update(last_uid=0)  # the server hands it over again
    support.refresh_from_db()
    dovecot.deliver(support.mail_user, raw)
    poll(support)

    assert not InboundMessage.objects.filter(sha256=row.sha256).exists()
