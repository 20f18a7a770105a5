"""The pipeline's database work per message stays small: a new case (with its acknowledgement)
and a reply into it each take a bounded number of queries. Before, the channel's own addresses
were read up to four times a message, the contact three times, and each participant and the
processing step took a locking read and savepoints of their own; a return to that fails here."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.models import Case, CaseMessage, CaseParticipant
from cases.services import inbound_process
from mailboxes.models import Alias, InboundMessage, Mailbox, OutboundMessage
from tests.cases.conftest import ACK, MARKER, mail

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome
_uids = itertools.count(1)

# What a message costs now (SQLite, inside the test's transaction, so the pipeline's own
# transaction is a SAVEPOINT and RELEASE): 23 for a new case with its acknowledgement, 14 for
# a reply. A little room above that; the code before took 35 and 23.
NEW_CASE_QUERIES = 25
REPLY_QUERIES = 16


def stored(mailbox: Mailbox, raw: bytes) -> InboundMessage:
    """The ledger row as the poll's store-first step leaves it for the pipeline."""
    return InboundMessage.objects.create(
        mailbox=mailbox,
        protocol="imap",
        uidvalidity=1,
        uid=next(_uids),
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        raw=raw,
    )


def processed(row: InboundMessage) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as captured:
        outcome = inbound_process(message_id=row.pk)
    return outcome, len(captured.captured_queries)


@pytest.fixture
def support() -> Mailbox:
    mailbox = Mailbox.objects.create(
        name="Support",
        email_address="support@example.test",
        protocol="imap",
        incoming_host="127.0.0.1",
        username="support",
        smtp_host="127.0.0.1",
        auto_ack_template=ACK,
        end_of_message_marker=MARKER,
    )
    Alias.objects.create(mailbox=mailbox, address="help@example.test")
    return mailbox


def test_a_new_case_and_a_reply_each_take_a_bounded_number_of_queries(support):
    outcome, queries = processed(stored(support, mail(to="Support <support@example.test>")))

    assert outcome == Outcome.PROCESSED
    case = Case.objects.get(mailbox=support)
    ack = OutboundMessage.objects.get(mailbox=support)
    assert [m.direction for m in case.messages.all()] == ["in", "out"]
    assert queries <= NEW_CASE_QUERIES, f"a new case took {queries} queries"

    cc = "carol.colleague@example.org"
    reply = mail(
        subject=f"Re: {ack.subject}",
        headers={"In-Reply-To": ack.message_id, "References": ack.message_id, "Cc": cc},
    )
    outcome, queries = processed(stored(support, reply))

    assert outcome == Outcome.PROCESSED
    assert CaseMessage.objects.filter(case=case).count() == 3
    assert queries <= REPLY_QUERIES, f"a reply took {queries} queries"
    # Participants are still the people, never the channel's own addresses.
    assert set(CaseParticipant.objects.filter(case=case).values_list("address", flat=True)) == {
        "carol@example.org",
        cc,
    }
