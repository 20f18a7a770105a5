"""The administrator sees what each channel received lately and retries what failed."""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.models import Case
from cases.services import inbound_process
from mailboxes.models import InboundMessage, Mailbox
from tests.cases.conftest import mail
from tests.workspace.conftest import client_for

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome
_uids = itertools.count(1)
CHANNELS = reverse("admin:mailboxes_mailbox_changelist")


def broken_flow(incoming):
    raise RuntimeError("the flow's database table is missing")


def make_mailbox(name: str) -> Mailbox:
    return Mailbox.objects.create(
        name=name,
        email_address=f"{name.lower()}@example.test",
        protocol="imap",
        incoming_host="127.0.0.1",
        incoming_port=993,
        username=name.lower(),
        smtp_host="127.0.0.1",
    )


def stored(mailbox: Mailbox, outcome: str, *, hours_ago: float = 1, raw: bytes = b"") -> int:
    raw = raw or mail()
    row = InboundMessage.objects.create(
        mailbox=mailbox,
        protocol="imap",
        uidvalidity=1,
        uid=next(_uids),
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        raw=raw,
        outcome=outcome,
        outcome_reason="Could not be parsed: ValueError: no header" if outcome == "failed" else "",
    )
    at = timezone.now() - timedelta(hours=hours_ago)
    InboundMessage.objects.filter(pk=row.pk).update(stored_at=at, processed_at=at)
    return row.pk


def row_of(page: str, mailbox: Mailbox) -> str:
    start = page.index(f"/admin/mailboxes/mailbox/{mailbox.pk}/change/")
    return page[start : page.index("</tr>", start)]


def test_the_channel_list_counts_the_last_24_hours_and_links_the_failed(admin):
    busy, quiet = make_mailbox("Busy"), make_mailbox("Quiet")
    for outcome in ("processed", "processed", "failed", "ignored"):
        stored(busy, outcome)
    stored(busy, "failed", hours_ago=50)  # older, still waiting for a retry
    stored(busy, "processed", hours_ago=30)

    page = unescape(client_for(admin).get(CHANNELS).text)

    busy_row, quiet_row = row_of(page, busy), row_of(page, quiet)
    assert "4 stored · 2 processed · 1 failed" in busy_row
    assert "0 stored · 0 processed · 0 failed" in quiet_row
    failed_link = (
        f"/admin/mailboxes/inboundmessage/?mailbox__id__exact={busy.pk}&outcome__exact=failed"
    )
    assert f'href="{failed_link}"' in busy_row
    assert ">2 failed</a>" in busy_row
    channel_page = unescape(
        client_for(admin).get(reverse("admin:mailboxes_mailbox_change", args=[busy.pk])).text
    )
    assert "4 stored · 2 processed · 1 failed" in channel_page


def test_the_channel_list_costs_the_same_queries_for_two_or_twenty_channels(admin):
    client = client_for(admin)
    client.get(CHANNELS)  # session and content types cached

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(CHANNELS).status_code == 200
        return len(captured)

    for n in range(2):
        stored(make_mailbox(f"Few{n}"), "failed")
    few = queries()
    for n in range(18):
        stored(make_mailbox(f"Many{n}"), "processed")

    assert queries() == few


def test_a_failed_message_is_listed_with_its_reason_and_retried(admin, settings):
    mailbox = make_mailbox("Support")
    flows = settings.POSTROOM_FLOWS
    settings.POSTROOM_FLOWS = {**flows, "create_case": ("Broken", "", f"{__name__}.broken_flow")}
    pk = stored(mailbox, "pending", raw=mail(subject="Lost order"))
    assert inbound_process(message_id=pk) == Outcome.FAILED
    client = client_for(admin)

    listing = unescape(
        client.get(
            reverse("admin:mailboxes_inboundmessage_changelist"),
            {"mailbox__id__exact": mailbox.pk, "outcome__exact": "failed"},
        ).text
    )

    assert "Processing failed: RuntimeError: the flow's database table is missing" in listing
    retry_url = reverse("admin:mailboxes_inboundmessage_retry", args=[pk])
    assert f'formaction="{retry_url}"' in listing

    settings.POSTROOM_FLOWS = flows  # the bug is fixed
    response = client.post(retry_url, follow=True)

    row = InboundMessage.objects.get(pk=pk)
    assert row.outcome == Outcome.PROCESSED
    case = Case.objects.get(pk=row.result["case"])
    assert case.subject == "Lost order"
    assert f"“Lost order”: processed. New case #{case.pk}" in unescape(response.text)
    assert client.get(retry_url).status_code == 405
