"""Mail delivered into the real Dovecot fixture and polled becomes the right case."""

from __future__ import annotations

import email
import email.policy

import pytest

from cases.models import Attachment, Case, CaseMessage, Contact
from cases.services import inbound_replay
from mailboxes.models import Alias, InboundMessage, OutboundMessage
from tests.cases.conftest import MARKER, case_of, mail

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome


def sent(row: OutboundMessage) -> email.message.EmailMessage:
    return email.message_from_bytes(bytes(row.raw), policy=email.policy.default)


def reply_to(row: OutboundMessage, **fields) -> bytes:
    """What Carol's client sends when she answers Postroom's mail."""
    original = sent(row)
    references = f"{original.get('References', '')} {original['Message-ID']}".strip()
    headers = {"In-Reply-To": original["Message-ID"], "References": references}
    quote = "\n".join(
        f"> {line}" for line in original.get_body(("plain",)).get_content().split("\n")
    )
    fields.setdefault("body", f"Thanks!\n\nOn Monday, Support wrote:\n{quote}\n")
    return mail(subject=f"Re: {original['Subject']}", headers=headers, **fields)


def test_it_opens_a_case_for_a_new_email_and_acknowledges_it_once(channel, receive):
    support = channel()

    row = receive(support, mail())

    case = case_of(row)
    assert row.outcome == Outcome.PROCESSED
    assert row.outcome_reason == f"New case #{case.reference} (acknowledgement sent)"
    assert (case.subject, case.address, case.contact.name) == (
        "Broken kettle",
        "carol@example.org",
        "Carol Customer",
    )
    ack = OutboundMessage.objects.get(mailbox=support)
    assert ack.kind == OutboundMessage.Kind.ACKNOWLEDGEMENT
    assert ack.recipients == ["carol@example.org"]
    message = sent(ack)
    assert message["Auto-Submitted"] == "auto-replied"
    assert f"[#{case.reference}]" in message["Subject"]
    assert f"case [#{case.reference}]" in message.get_body(("plain",)).get_content()
    assert [m.direction for m in case.messages.all()] == ["in", "out"]

    assert inbound_replay(message_id=row.pk) == Outcome.PROCESSED
    assert OutboundMessage.objects.filter(mailbox=support).count() == 1
    assert CaseMessage.objects.filter(case=case).count() == 2


def test_a_reply_joins_its_case_with_the_quoted_history_cut(channel, receive):
    support = channel()
    case = case_of(receive(support, mail()))
    ack = OutboundMessage.objects.get(mailbox=support)

    row = receive(support, reply_to(ack))

    assert case_of(row) == case
    latest = case.messages.filter(direction="in").last()
    assert latest.joined_by == CaseMessage.JoinedBy.IN_REPLY_TO
    assert latest.joined_detail == ack.message_id
    assert latest.text == "Thanks!"
    assert MARKER in latest.full_text
    assert OutboundMessage.objects.filter(mailbox=support).count() == 1  # no second ack


def test_the_case_reference_joins_only_a_case_the_sender_takes_part_in(channel, receive):
    support = channel()
    case = case_of(receive(support, mail()))

    again = receive(support, mail(subject=f"Another thing [#{case.reference}]"))
    stranger = receive(
        support, mail(sender="mallory@example.net", subject=f"Hijack [#{case.reference}]")
    )

    assert case_of(again) == case
    assert case.messages.filter(joined_by=CaseMessage.JoinedBy.SUBJECT).count() == 1
    assert case_of(stranger) != case
    assert "takes no part" in stranger.outcome_reason


def test_different_people_answering_one_mail_get_their_own_cases(channel, receive):
    support = channel()
    case = case_of(receive(support, mail()))
    ack = OutboundMessage.objects.get(mailbox=support)

    dave = receive(support, reply_to(ack, sender="Dave <dave@example.org>"))

    assert case_of(dave) != case
    assert case_of(dave).address == "dave@example.org"


def test_a_channel_without_new_cases_keeps_the_mail_and_says_so(channel, receive):
    support = channel(allow_new_case=False)

    row = receive(support, mail())

    row.refresh_from_db()
    assert row.outcome == Outcome.IGNORED
    assert "does not allow new cases" in row.outcome_reason
    assert not Case.objects.filter(mailbox=support).exists()
    refusal = OutboundMessage.objects.get(mailbox=support)
    assert sent(refusal)["Auto-Submitted"] == "auto-replied"
    assert "does not open new requests" in sent(refusal).get_body(("plain",)).get_content()


def test_the_sender_filter_refuses_with_the_rule_that_matched(channel, receive):
    support = channel(sender_filter="!*@spam.test")

    row = receive(support, mail(sender="bulk@spam.test"))

    row.refresh_from_db()
    assert row.outcome == Outcome.IGNORED
    assert (
        row.outcome_reason
        == "Refused: the sender filter refuses bulk@spam.test (rule !*@spam.test)"
    )
    assert not Case.objects.exists()


def test_a_colleague_answering_from_the_channel_address_is_recorded_as_sent(channel, receive):
    support = channel()
    Alias.objects.create(mailbox=support, address="kettles@example.test")
    case = case_of(receive(support, mail()))
    ack = OutboundMessage.objects.get(mailbox=support)

    answer = receive(support, reply_to(ack, sender="Support <kettles@example.test>"))
    stray = receive(support, mail(sender=support.email_address, subject="Note to self"))

    assert case_of(answer) == case
    assert case.messages.last().direction == CaseMessage.Direction.OUT
    stray.refresh_from_db()
    assert stray.outcome == Outcome.IGNORED
    assert stray.outcome_reason == "Sent from the channel's own address and answers no case"


def test_automatic_mail_opens_a_case_but_is_never_answered(channel, receive):
    support = channel()

    row = receive(support, mail(sender="alerts@example.org", headers={"Precedence": "bulk"}))

    case = case_of(row)
    assert "no acknowledgement: the message is automatic (Precedence: bulk)" in row.outcome_reason
    assert case.messages.get().automatic == "Precedence: bulk"
    assert not OutboundMessage.objects.exists()


def test_one_sender_gets_at_most_three_automatic_replies_an_hour(channel, receive):
    support = channel()

    rows = [receive(support, mail(subject=f"Question {n}")) for n in range(5)]

    assert Case.objects.filter(mailbox=support).count() == 5
    assert OutboundMessage.objects.filter(mailbox=support).count() == 3
    rows[-1].refresh_from_db()
    assert "3 automatic replies already went to this address" in rows[-1].outcome_reason


def test_up_to_five_attachments_are_kept_and_the_rest_listed(channel, receive, settings):
    settings.POSTROOM_ATTACHMENT_MAX_BYTES = 1000
    support = channel()
    files = [(f"invoice-{n}.pdf", b"%PDF-1.4 small") for n in range(6)]
    files.insert(0, ("huge.pdf", b"x" * 2000))

    case = case_of(receive(support, mail(attachments=files)))

    attachments = Attachment.objects.filter(message__case=case)
    kept = [a.filename for a in attachments if a.kept]
    assert kept == [f"invoice-{n}.pdf" for n in range(5)]
    assert (
        attachments.get(filename="huge.pdf").not_kept_reason == "larger than the 1,000 byte limit"
    )
    last = attachments.get(filename="invoice-5.pdf")
    assert (last.kept, last.not_kept_reason) == (
        False,
        "only the first 5 files of a message are kept",
    )
    assert attachments.get(filename="invoice-0.pdf").file.read() == b"%PDF-1.4 small"


def test_attachments_off_lists_them_without_keeping_them(channel, receive):
    support = channel(attachments_allowed=False)

    case = case_of(receive(support, mail(attachments=[("a.pdf", b"%PDF")])))

    attachment = Attachment.objects.get(message__case=case)
    assert (attachment.kept, attachment.file.name) == (False, "")
    assert attachment.not_kept_reason == "attachments are off on this channel"


def test_unknown_senders_stay_without_a_contact_when_the_channel_says_so(channel, receive):
    support = channel(create_contact_for_unknown=False)

    case = case_of(receive(support, mail()))

    assert case.contact is None
    assert not Contact.objects.exists()


def test_unknown_senders_are_held_when_the_channel_asks_for_confirmation(channel, receive):
    support = channel(confirm_unknown_senders=True)
    Contact.objects.create(address="known@example.org")

    unknown = receive(support, mail())
    known = receive(support, mail(sender="known@example.org"))

    unknown.refresh_from_db()
    assert unknown.outcome == Outcome.HELD
    assert case_of(known).contact.address == "known@example.org"


def test_a_delivery_report_goes_on_the_case_of_the_mail_it_reports_on(channel, receive):
    support = channel()
    case = case_of(receive(support, mail()))
    ack = OutboundMessage.objects.get(mailbox=support)
    report = (
        f"From: MAILER-DAEMON@example.net\r\nTo: {support.email_address}\r\n"
        "Subject: Undelivered Mail\r\n"
        "MIME-Version: 1.0\r\nMessage-ID: <dsn-1@example.net>\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        "Final-Recipient: rfc822; carol@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {ack.message_id}\r\n--b--\r\n"
    )

    row = receive(support, report.encode())

    assert case_of(row) == case
    assert case.messages.last().joined_by == CaseMessage.JoinedBy.BOUNCE
    assert row.outcome_reason.startswith(f"Delivery report for outgoing message {ack.pk}")


def test_a_file_name_cannot_climb_out_of_the_attachments_folder(channel, receive):
    support = channel()

    case = case_of(receive(support, mail(attachments=[("../../../etc/passwd", b"%PDF")])))

    attachment = Attachment.objects.get(message__case=case)
    assert attachment.file.name.startswith("attachments/")
    assert ".." not in attachment.file.name
    assert attachment.file.name.rsplit("/", 1)[-1].startswith("passwd")


def test_a_delivery_report_marks_the_sent_mail_bounced(channel, receive):
    support = channel()
    receive(support, mail())
    ack = OutboundMessage.objects.get(mailbox=support)
    OutboundMessage.objects.filter(pk=ack.pk).update(state=OutboundMessage.State.SENT)
    report = (
        f"From: MAILER-DAEMON@example.net\r\nTo: {support.email_address}\r\n"
        "Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\nMessage-ID: <dsn-2@example.net>\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nNo such user.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        "Final-Recipient: rfc822; carol@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {ack.message_id}\r\n--b--\r\n"
    )

    row = receive(support, report.encode())

    ack.refresh_from_db()
    assert ack.state == OutboundMessage.State.BOUNCED
    assert ack.bounced_at is not None
    assert "Status: 5.1.1" in ack.bounce_text
    assert "No such user." in ack.bounce_text
    assert "marked bounced" in row.outcome_reason
    assert inbound_replay(message_id=row.pk) == Outcome.PROCESSED
