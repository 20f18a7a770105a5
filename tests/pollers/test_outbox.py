"""Mail out: every reply reaches the server once, threaded, copied to Sent, never lost."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from channels_app.celery import app as celery_app
from mailboxes.compose import Draft, OutgoingAttachment, message_compose
from mailboxes.models import Alias, Mailbox, OutboundMessage
from mailboxes.outbox import outbound_resend, outbox_resume
from mailboxes.services import mailbox_smtp_settings, network_policy
from pollers.models import SendSlot
from pollers.outbox import (
    _claim_due,
    _claims_renew,
    _slot_acquire,
    outbox_send_due,
    outbox_sweep,
)
from providers.outgoing import Envelope, smtp_send_many
from tests.pollers.conftest import MARKER, enqueue
from tests.servers.net import free_port
from tests.servers.sendgrid import GOOD_TOKEN

pytestmark = [pytest.mark.django_db, pytest.mark.backends]
State = OutboundMessage.State
EVIL = "Hi\r\nBcc: victim@example.net\r\nX-Evil: 1"


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def body(message, subtype: str = "plain") -> str:
    return message.get_body((subtype,)).get_content().replace("\r\n", "\n")


def make_due(row: OutboundMessage) -> None:
    OutboundMessage.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())


def reload(row: OutboundMessage) -> OutboundMessage:
    row.refresh_from_db()
    return row


@pytest.fixture
def eager_tasks():
    """Tasks run inline, as a worker would run them, so the outcome is visible at once."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


# --- The message ------------------------------------------------------------------------------


def test_a_reply_reaches_the_server_threaded_from_the_alias_with_marker_and_attachment(
    sender, smtp, dovecot, mail_user
):
    mailbox = sender()
    alias = Alias.objects.create(
        mailbox=mailbox, address="billing@example.test", display_name="Billing desk"
    )
    row = enqueue(
        mailbox,
        alias=alias,
        case_reference="1234",
        in_reply_to="<orig-1@example.org>",
        references=["<first@example.org>"],
        attachments=[OutgoingAttachment("invoice.pdf", b"%PDF-1.4 fake", "application/pdf")],
    )

    run = outbox_send_due(mailbox_id=mailbox.pk)

    assert run.sent == 1
    [received] = smtp.wait_for(1)
    assert received.raw == bytes(row.raw)
    message = parsed(received.raw)
    assert str(message["From"]) == "Billing desk <billing@example.test>"
    assert str(message["Reply-To"]) == "help@example.test"
    assert message["Subject"] == "Re: Broken kettle [#1234]"
    assert message["In-Reply-To"] == "<orig-1@example.org>"
    assert message["References"] == "<first@example.org> <orig-1@example.org>"
    assert message["Message-ID"] == row.message_id
    assert row.message_id.endswith("@postroom.localhost>")
    assert message["Auto-Submitted"] is None  # an agent's reply is not automatic
    assert message.get_content_type() == "multipart/mixed"
    text, html = body(message), body(message, "html")
    assert text.startswith(MARKER) and MARKER in html
    assert "We are sending a new one." in text and "We are sending a new one." in html
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"
    assert received.mail_from == mail_user.address and received.rcpt_tos == ("carol@example.org",)

    row = reload(row)
    assert row.state == State.SENT and row.attempts == 1 and row.copied_to_sent
    assert "queued" in row.server_reply
    with dovecot.imap(mail_user) as client:
        client.select_folder("Sent", readonly=True)
        [copy] = client.fetch(client.search("ALL"), ["FLAGS", "BODY.PEEK[]"]).values()
    assert copy[b"BODY[]"] == bytes(row.raw)
    assert b"\\Seen" in copy[b"FLAGS"]


def test_without_an_alias_the_channels_from_name_is_used(sender, smtp):
    mailbox = sender(from_name="Kettle Co. support")
    enqueue(mailbox)
    outbox_send_due(mailbox_id=mailbox.pk)
    message = parsed(smtp.wait_for(1)[0].raw)
    assert str(message["From"]) == f'"Kettle Co. support" <{mailbox.email_address}>'


def test_the_case_response_template_wraps_the_reply(sender, smtp):
    mailbox = sender(case_response_template="Hello,\n\n{{ reply }}\n\n-- {{ channel.from_name }}")
    enqueue(mailbox)
    outbox_send_due(mailbox_id=mailbox.pk)
    message = parsed(smtp.wait_for(1)[0].raw)
    expected = "Hello,\n\nWe are sending a new one.\n\n-- Support team"
    assert expected in body(message) and body(message).startswith(MARKER)
    html = body(message, "html").replace("\n", "")
    assert "<p>Hello,</p><p>We are sending a new one.</p><p>-- Support team</p>" in html


def test_the_template_cannot_reach_the_channels_secrets(sender, mail_user):
    mailbox = sender(case_response_template="{{ reply }} [{{ channel.password }}]")
    raw = bytes(enqueue(mailbox).raw)
    assert mail_user.password.encode() not in raw
    assert "We are sending a new one. []" in body(parsed(raw))


def test_automatic_mail_says_so_to_the_server(sender, smtp):
    mailbox = sender()
    enqueue(mailbox, automatic=True)
    outbox_send_due(mailbox_id=mailbox.pk)
    message = parsed(smtp.wait_for(1)[0].raw)
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"


@pytest.mark.parametrize(
    "field", ["subject", "from_name", "alias_name", "case_reference", "attachment_name"]
)
def test_user_text_can_never_inject_a_header(sender, smtp, field):
    mailbox = sender(from_name=EVIL if field == "from_name" else "Support")
    alias = None
    if field == "alias_name":
        alias = Alias.objects.create(mailbox=mailbox, address="a@example.test", display_name=EVIL)
    enqueue(
        mailbox,
        subject=EVIL if field == "subject" else "Hello",
        alias=alias,
        case_reference=EVIL if field == "case_reference" else "",
        attachments=[OutgoingAttachment(EVIL if field == "attachment_name" else "a.txt", b"x")],
    )
    outbox_send_due(mailbox_id=mailbox.pk)

    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == ("carol@example.org",)  # no Bcc reached the envelope
    message = parsed(received.raw)
    assert message["Bcc"] is None and message["X-Evil"] is None
    for part in message.walk():
        assert part["X-Evil"] is None and part["Bcc"] is None


@pytest.mark.parametrize("where", ["to", "cc", "reply_to", "alias_address"])
def test_an_address_with_a_line_break_is_refused(sender, where):
    evil = "carol@example.org\r\nBcc: x@example.net"
    mailbox = sender(reply_to=evil if where == "reply_to" else "")
    alias = Alias(mailbox=mailbox, address=evil) if where == "alias_address" else None
    draft = Draft(
        to=[evil if where == "to" else "carol@example.org"],
        cc=[evil] if where == "cc" else [],
        alias=alias,
        subject="s",
        text="t",
    )
    with pytest.raises(ValueError, match="Not a valid email address"):
        message_compose(mailbox=mailbox, draft=draft)


# --- Retries, failures and the sweeper --------------------------------------------------------


def test_a_4xx_is_retried_and_the_message_is_sent_once(sender, smtp):
    mailbox = sender()
    smtp.fail_next(stage="RCPT", code=451, text="4.3.0 Try again later")
    row = enqueue(mailbox)

    outbox_send_due(mailbox_id=mailbox.pk)
    row = reload(row)
    assert row.state == State.RETRYING and "Try again later" in row.last_error
    # The first retry waits 1 min ± 20 %.
    assert timezone.now() + timedelta(seconds=40) < row.next_attempt_at
    assert row.next_attempt_at < timezone.now() + timedelta(seconds=80)
    assert outbox_sweep() == []  # not due yet

    make_due(row)
    assert outbox_sweep() == [mailbox.pk]
    outbox_send_due(mailbox_id=mailbox.pk)
    row = reload(row)
    assert row.state == State.SENT and row.attempts == 2
    assert len(smtp.messages) == 1


def test_a_5xx_fails_at_once_with_the_servers_words(sender, smtp):
    mailbox = sender()
    smtp.fail_next(stage="DATA", code=550, text="5.7.1 Message rejected as spam")
    row = enqueue(mailbox)

    run = outbox_send_due(mailbox_id=mailbox.pk)

    row = reload(row)
    assert run.failed == 1 and row.state == State.FAILED and row.attempts == 1
    assert "550 5.7.1 Message rejected as spam" in row.last_error
    assert smtp.messages == []
    assert outbox_sweep() == []  # failed is final until someone resends it


def test_a_connection_closed_during_data_loses_nothing(sender, smtp):
    mailbox = sender()
    smtp.drop_next(stage="DATA")
    row = enqueue(mailbox)

    outbox_send_due(mailbox_id=mailbox.pk)
    row = reload(row)
    assert row.state == State.RETRYING and "broke during the message" in row.last_error

    make_due(row)
    outbox_send_due(mailbox_id=mailbox.pk)
    [received] = smtp.wait_for(1)
    assert parsed(received.raw)["Message-ID"] == row.message_id
    assert reload(row).state == State.SENT


def test_a_server_that_is_down_gets_the_mail_when_it_is_back(sender, smtp, tcp_proxy):
    proxy = tcp_proxy(free_port())  # accepts, then finds nothing behind it
    mailbox = sender(smtp_port=proxy.port)
    rows = [enqueue(mailbox) for _ in range(3)]

    run = outbox_send_due(mailbox_id=mailbox.pk)
    assert run.retrying == 3 and proxy.connections == 1  # one try for the whole batch

    proxy.target = ("127.0.0.1", smtp.starttls_port)  # the server is back
    for row in rows:
        make_due(row)
    outbox_send_due(mailbox_id=mailbox.pk)

    received = smtp.wait_for(3)
    assert sorted(parsed(m.raw)["Message-ID"] for m in received) == sorted(
        r.message_id for r in rows
    )
    assert {reload(r).state for r in rows} == {State.SENT}


def test_a_server_that_stays_down_fails_the_message_after_its_attempts(sender, settings):
    settings.POSTROOM_OUTBOX_MAX_ATTEMPTS = 3
    mailbox = sender(smtp_port=free_port())
    row = enqueue(mailbox)
    assert row.max_attempts == 3
    for _ in range(3):
        make_due(row)
        outbox_send_due(mailbox_id=mailbox.pk)
    row = reload(row)
    assert row.state == State.FAILED
    assert "Gave up after 3 attempts" in row.last_error and "Nothing answers" in row.last_error


def test_a_worker_killed_after_claiming_leaves_mail_the_sweeper_sends_once(sender, smtp):
    mailbox = sender()
    row = enqueue(mailbox)
    assert _claim_due(mailbox, "worker-that-dies")  # claimed, then the worker died
    assert outbox_sweep() == []  # its claim has not expired yet
    assert outbox_send_due(mailbox_id=mailbox.pk).sent == 0  # nor may anyone else send it

    OutboundMessage.objects.filter(pk=row.pk).update(
        claim_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert outbox_sweep() == [mailbox.pk]
    outbox_send_due(mailbox_id=mailbox.pk)
    assert reload(row).state == State.SENT
    assert len(smtp.messages) == 1


def test_a_worker_killed_after_the_server_took_the_mail_resends_it_once_unchanged(sender, smtp):
    mailbox = sender()
    row = enqueue(mailbox)
    [claimed] = _claim_due(mailbox, "worker-that-dies")
    # The dying worker got its "250" but never committed it.
    envelope = Envelope(claimed.mail_from, tuple(claimed.recipients), bytes(claimed.raw))
    [result] = smtp_send_many(mailbox_smtp_settings(mailbox=mailbox), network_policy(), [envelope])
    assert result.ok
    OutboundMessage.objects.filter(pk=row.pk).update(
        claim_expires_at=timezone.now() - timedelta(seconds=1)
    )

    outbox_send_due(mailbox_id=mailbox.pk)

    first, second = smtp.wait_for(2)
    assert first.raw == second.raw == bytes(row.raw)  # same bytes, same Message-ID
    assert reload(row).state == State.SENT
    outbox_send_due(mailbox_id=mailbox.pk)
    assert len(smtp.messages) == 2  # and never a third time


def test_a_lost_task_is_made_good_by_the_sweeper_that_beat_runs_every_minute(sender):
    task = PeriodicTask.objects.get(task="pollers.sweep_outbox")
    assert task.enabled and task.interval.every == 60 and task.interval.period == "seconds"
    mailbox = sender()
    enqueue(mailbox)  # its on-commit task never ran: a broker lost it
    assert outbox_sweep() == [mailbox.pk]


def test_a_reply_is_sent_by_a_task_once_its_transaction_commits(
    sender, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    mailbox = sender()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        row = enqueue(mailbox)
    assert smtp.messages == [] and reload(row).state == State.QUEUED  # nothing before commit
    for callback in callbacks:
        callback()
    assert smtp.wait_for(1) and reload(row).state == State.SENT


def test_a_wrong_smtp_password_pauses_the_outbox_and_turns_the_channel_red(sender, smtp, mail_user):
    mailbox = sender(smtp_password="wrong")
    rows = [enqueue(mailbox) for _ in range(3)]

    run = outbox_send_due(mailbox_id=mailbox.pk)

    mailbox.refresh_from_db()
    assert run.paused and mailbox.outbox_paused
    assert mailbox.status == Mailbox.Status.ERROR
    assert "refused the login" in mailbox.outbox_paused_reason
    assert "wrong" not in mailbox.outbox_paused_reason
    assert smtp.connections_opened == 1  # asked once, not once per message
    for row in rows:
        row = reload(row)
        assert row.state == State.QUEUED and row.attempts == 0  # nothing failed, nothing burnt
    assert outbox_sweep() == []  # a paused outbox is not swept
    assert outbox_send_due(mailbox_id=mailbox.pk).paused

    Mailbox.objects.filter(pk=mailbox.pk).update(smtp_password=mail_user.password)
    mailbox.refresh_from_db()
    outbox_resume(mailbox=mailbox)
    outbox_send_due(mailbox_id=mailbox.pk)
    assert len(smtp.wait_for(3)) == 3


def test_a_failed_message_can_be_sent_again_with_the_same_message_id(sender, smtp):
    mailbox = sender()
    smtp.fail_next(stage="DATA", code=554, text="5.0.0 Not now")
    row = enqueue(mailbox)
    outbox_send_due(mailbox_id=mailbox.pk)

    assert outbound_resend(message_ids=[row.pk]) == 1
    outbox_send_due(mailbox_id=mailbox.pk)
    row = reload(row)
    assert row.state == State.SENT and row.attempts == 1
    assert parsed(smtp.wait_for(1)[0].raw)["Message-ID"] == row.message_id


# --- Sessions ---------------------------------------------------------------------------------


def test_many_replies_go_over_one_session(sender, smtp):
    mailbox = sender()
    rows = [enqueue(mailbox) for _ in range(5)]

    assert outbox_send_due(mailbox_id=mailbox.pk).sent == 5

    assert smtp.connections_opened == 1
    assert [parsed(m.raw)["Message-ID"] for m in smtp.wait_for(5)] == [r.message_id for r in rows]


def test_a_claimed_message_is_not_claimed_twice(sender):
    mailbox = sender()
    row = enqueue(mailbox)
    assert [r.pk for r in _claim_due(mailbox, "a")] == [row.pk]
    assert _claim_due(mailbox, "b") == []


def test_a_slow_batch_renews_its_claims_so_no_one_else_sends_them(sender):
    mailbox = sender()
    for _ in range(2):
        enqueue(mailbox)
    claimed = _claim_due(mailbox, "slow")
    past = timezone.now() - timedelta(seconds=1)
    OutboundMessage.objects.update(claim_expires_at=past)  # the server took its time

    _claims_renew(claimed, "slow")

    assert outbox_sweep() == [] and _claim_due(mailbox, "other") == []


def test_a_channel_holds_at_most_two_sending_sessions(sender, smtp):
    mailbox = sender()
    enqueue(mailbox)
    assert _slot_acquire(mailbox, "a") and _slot_acquire(mailbox, "b")
    assert not _slot_acquire(mailbox, "c")

    run = outbox_send_due(mailbox_id=mailbox.pk)

    assert run.busy and smtp.connections_opened == 0
    SendSlot.objects.filter(mailbox=mailbox, owner="b").update(owner="", expires_at=None)
    assert outbox_send_due(mailbox_id=mailbox.pk).sent == 1
    assert SendSlot.objects.filter(mailbox=mailbox, owner="").count() == 1  # given back


def test_a_slot_whose_worker_died_is_taken_over(sender):
    mailbox = sender()
    assert _slot_acquire(mailbox, "a") and _slot_acquire(mailbox, "b")
    SendSlot.objects.filter(mailbox=mailbox, owner="a").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert _slot_acquire(mailbox, "c")


# --- SendGrid ---------------------------------------------------------------------------------


@pytest.fixture
def sendgrid_channel(sender, sendgrid_api, settings):
    settings.POSTROOM_SENDGRID_API_URL = sendgrid_api.url

    def make(token: str = GOOD_TOKEN, **fields) -> Mailbox:
        return sender(server_type="sendgrid", sendgrid_api_token=token, **fields)

    return make


def test_a_sendgrid_channel_sends_the_reply_threaded_and_copies_it_to_sent(
    sendgrid_channel, sendgrid_api, dovecot, mail_user
):
    mailbox = sendgrid_channel()
    alias = Alias.objects.create(
        mailbox=mailbox, address="billing@example.test", display_name="Billing desk"
    )
    row = enqueue(
        mailbox,
        alias=alias,
        automatic=True,
        in_reply_to="<orig-1@example.org>",
        attachments=[OutgoingAttachment("invoice.pdf", b"%PDF-1.4 fake", "application/pdf")],
    )

    assert outbox_send_due(mailbox_id=mailbox.pk).sent == 1

    [sent] = sendgrid_api.accepted
    payload = sent.payload
    assert payload["from"] == {"email": "billing@example.test", "name": "Billing desk"}
    assert payload["reply_to"] == {"email": "help@example.test"}
    assert payload["personalizations"] == [{"to": [{"email": "carol@example.org"}]}]
    assert payload["subject"] == "Re: Broken kettle"
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert payload["content"][0]["value"].startswith(MARKER)
    assert payload["attachments"][0]["filename"] == "invoice.pdf"
    assert payload["headers"]["Message-ID"] == row.message_id
    assert payload["headers"]["In-Reply-To"] == "<orig-1@example.org>"
    assert payload["headers"]["References"] == "<orig-1@example.org>"
    assert payload["headers"]["Auto-Submitted"] == "auto-replied"
    row = reload(row)
    assert row.state == State.SENT and sent.message_id in row.server_reply
    assert row.copied_to_sent and len(dovecot.folder_uids(mail_user, "Sent")) == 1


def test_sendgrid_400_fails_the_message_with_sendgrids_words(sendgrid_channel, sendgrid_api):
    mailbox = sendgrid_channel()
    sendgrid_api.fail_next(400, "The from address does not match a verified Sender Identity.")
    row = enqueue(mailbox)

    outbox_send_due(mailbox_id=mailbox.pk)

    row = reload(row)
    assert row.state == State.FAILED
    assert "does not match a verified Sender Identity" in row.last_error


@pytest.mark.parametrize("token", ["SG.revoked", "SG.test-token.read-only"])
def test_sendgrid_401_or_403_pauses_the_outbox(sendgrid_channel, sendgrid_api, token):
    mailbox = sendgrid_channel(token=token)
    rows = [enqueue(mailbox) for _ in range(2)]

    assert outbox_send_due(mailbox_id=mailbox.pk).paused

    mailbox.refresh_from_db()
    assert mailbox.outbox_paused and mailbox.status == Mailbox.Status.ERROR
    assert "SendGrid refused the API token" in mailbox.outbox_paused_reason
    assert {(reload(r).state, r.attempts) for r in rows} == {(State.QUEUED, 0)}
    assert len(sendgrid_api.requests) == 1


def test_sendgrid_429_waits_at_least_as_long_as_it_is_told(sendgrid_channel, sendgrid_api):
    mailbox = sendgrid_channel()
    sendgrid_api.fail_next(429, retry_after=900)
    row = enqueue(mailbox)

    outbox_send_due(mailbox_id=mailbox.pk)

    row = reload(row)
    assert row.state == State.RETRYING and "HTTP 429" in row.last_error
    assert row.next_attempt_at >= timezone.now() + timedelta(seconds=890)


@pytest.mark.parametrize("status", [500, 503])
def test_sendgrid_5xx_is_retried_and_sent_once(sendgrid_channel, sendgrid_api, status):
    mailbox = sendgrid_channel()
    sendgrid_api.fail_next(status)
    row = enqueue(mailbox)

    outbox_send_due(mailbox_id=mailbox.pk)
    assert reload(row).state == State.RETRYING
    make_due(row)
    outbox_send_due(mailbox_id=mailbox.pk)

    assert reload(row).state == State.SENT and len(sendgrid_api.accepted) == 1
