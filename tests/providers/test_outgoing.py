"""The outbox hands built messages to a sender: SMTP or SendGrid, then a copy to Sent."""

from __future__ import annotations

import base64
import email.policy
import functools
from email.message import EmailMessage

import pytest

from providers.config import (
    Credentials,
    IncomingSettings,
    NetworkPolicy,
    SendGridSettings,
    ServerAddress,
    SmtpSettings,
)
from providers.errors import AddressBlocked, AuthenticationFailed, ConnectionRefused, TLSFailed
from providers.outgoing import (
    Envelope,
    imap_append_sent,
    outgoing_session,
    sendgrid_payload,
    sendgrid_send,
    smtp_send_many,
)
from tests.providers.conftest import LOOPBACK_BLOCKED, POLICY, TIMEOUT
from tests.servers.sendgrid import GOOD_TOKEN, READ_ONLY_TOKEN

SENDER = "support@example.test"
PASSWORD = "correct horse battery staple"
CUSTOMER = "carol@example.org"


@functools.cache
def built(n: int = 1, *, to: str = CUSTOMER, cc: str = "", attachment: bool = False) -> bytes:
    """A message as the outbox stores it: headers, text and HTML, maybe a PDF (built once, so
    the MIME boundaries, which are random, stay the same)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = f"Support team <{SENDER}>"
    message["To"] = f"Carol Customer <{to}>"
    if cc:
        message["Cc"] = f"Dan <{cc}>"
    message["Reply-To"] = "help@example.test"
    message["Subject"] = f"Re: Order {n} [#{n}]"
    message["Message-ID"] = f"<reply-{n}@postroom.test>"
    message["In-Reply-To"] = f"<question-{n}@example.org>"
    message["References"] = f"<first-{n}@example.org> <question-{n}@example.org>"
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(f"Your order {n} is on its way.\n")
    message.add_alternative(f"<p>Your order {n} is on its way.</p>", subtype="html")
    if attachment:
        message.add_attachment(
            b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice.pdf"
        )
    return message.as_bytes()


def envelope(n: int = 1, **kwargs) -> Envelope:
    recipients = (kwargs.get("to", CUSTOMER), *([kwargs["cc"]] if kwargs.get("cc") else []))
    return Envelope(SENDER, recipients, built(n, **kwargs))


# --- SMTP -------------------------------------------------------------------------------------


@pytest.fixture
def smtp_user(smtp):
    smtp.add_user(SENDER, PASSWORD)
    return smtp


def smtp_settings(smtp, security: str = "starttls", *, port=None, password=PASSWORD):
    ports = {"starttls": smtp.starttls_port, "ssl": smtp.smtps_port, "none": smtp.plain_port}
    server = ServerAddress("127.0.0.1", port or ports[security], security, True, TIMEOUT)
    return SmtpSettings(server, Credentials(SENDER, password) if password is not None else None)


@pytest.mark.parametrize(("security", "tls"), [("starttls", True), ("ssl", True)])
def test_it_sends_the_exact_bytes_over_tls_as_configured(smtp_user, security, tls):
    [result] = smtp_send_many(smtp_settings(smtp_user, security), POLICY, [envelope(1)])

    assert result.ok and result.accepted == (CUSTOMER,)
    assert "queued" in result.server_reply
    [received] = smtp_user.wait_for(1)
    assert received.raw == built(1)
    assert received.tls is tls and received.login == SENDER
    assert received.mail_from == SENDER and received.rcpt_tos == (CUSTOMER,)


def test_security_none_never_upgrades_even_when_the_server_offers_starttls(smtp_user):
    smtp_user.auth_require_tls = False  # the STARTTLS listener then takes AUTH in the clear
    config = smtp_settings(smtp_user, "none", port=smtp_user.starttls_port)

    [result] = smtp_send_many(config, POLICY, [envelope(1)])

    assert result.ok
    [received] = smtp_user.wait_for(1)
    assert received.listener == "starttls" and received.tls is False


def test_starttls_is_required_when_chosen(smtp_user):
    config = smtp_settings(smtp_user, "starttls", port=smtp_user.plain_port)

    [result] = smtp_send_many(config, POLICY, [envelope(1)])

    assert isinstance(result.error, TLSFailed) and result.error.permanent
    assert smtp_user.messages == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_it_logs_in_with_plain_or_login(smtp_user, mechanism):
    smtp_user.auth_exclude = tuple({"PLAIN", "LOGIN"} - {mechanism})

    [result] = smtp_send_many(smtp_settings(smtp_user), POLICY, [envelope(1)])

    assert result.ok and smtp_user.wait_for(1)[0].login == SENDER


def test_many_messages_go_over_one_session(smtp_user):
    results = smtp_send_many(smtp_settings(smtp_user), POLICY, [envelope(n) for n in range(5)])

    assert [r.ok for r in results] == [True] * 5
    assert [m.raw for m in smtp_user.wait_for(5)] == [built(n) for n in range(5)]
    assert smtp_user.connections_opened == 1


def test_a_4xx_is_transient_and_the_session_carries_on(smtp_user):
    smtp_user.fail_next(stage="RCPT", code=451, text="4.3.0 Try again later")

    first, second = smtp_send_many(smtp_settings(smtp_user), POLICY, [envelope(1), envelope(2)])

    assert not first.ok and not first.error.permanent
    assert "451 4.3.0 Try again later" in str(first.error)
    assert second.ok and smtp_user.connections_opened == 1


def test_a_5xx_is_permanent_with_the_servers_words(smtp_user):
    smtp_user.fail_next(stage="DATA", code=554, text="5.7.1 Rejected as spam")

    [result] = smtp_send_many(smtp_settings(smtp_user), POLICY, [envelope(1)])

    assert result.error.permanent and result.error.kind == "protocol"
    assert (
        str(result.error)
        == "127.0.0.1 refused the message (server said: 554 5.7.1 Rejected as spam)."
    )


def test_a_421_closes_the_session_and_the_next_message_gets_a_new_one(smtp_user):
    smtp_user.fail_next(stage="MAIL", code=421, text="4.7.0 Too busy, closing")

    first, second = smtp_send_many(smtp_settings(smtp_user), POLICY, [envelope(1), envelope(2)])

    assert not first.ok and not first.error.permanent
    assert second.ok and smtp_user.connections_opened == 2


def test_a_connection_dropped_during_data_fails_that_message_only(smtp_user):
    smtp_user.drop_next(stage="DATA")
    batch = [envelope(n) for n in range(3)]

    results = smtp_send_many(smtp_settings(smtp_user), POLICY, batch)

    assert not results[0].ok and not results[0].error.permanent
    assert "broke during the message" in str(results[0].error)
    assert [r.ok for r in results[1:]] == [True, True]
    assert [m.raw for m in smtp_user.wait_for(2)] == [built(1), built(2)]


def test_a_wrong_password_is_an_auth_error_for_the_whole_batch_asked_once(smtp_user):
    results = smtp_send_many(
        smtp_settings(smtp_user, password="wrong"), POLICY, [envelope(n) for n in range(3)]
    )

    assert all(isinstance(r.error, AuthenticationFailed) for r in results)
    assert "wrong" not in str(results[0].error)
    assert smtp_user.connections_opened == 1 and smtp_user.messages == []


def test_a_server_that_wants_a_login_it_was_not_given_is_an_auth_error(smtp_user):
    results = smtp_send_many(
        smtp_settings(smtp_user, "none", password=None), POLICY, [envelope(1), envelope(2)]
    )

    assert [r.error.kind for r in results] == ["auth", "auth"]
    assert "530" in str(results[0].error)


def test_a_server_that_is_down_is_asked_once_per_batch(smtp, closed_port):
    config = smtp_settings(smtp, "starttls", port=closed_port)

    results = smtp_send_many(config, POLICY, [envelope(1), envelope(2)])

    assert all(isinstance(r.error, ConnectionRefused) for r in results)
    assert not results[0].error.permanent


def test_blocked_networks_apply_to_sending_too(smtp_user):
    [result] = smtp_send_many(smtp_settings(smtp_user), LOOPBACK_BLOCKED, [envelope(1)])

    assert isinstance(result.error, AddressBlocked)


# --- SendGrid ---------------------------------------------------------------------------------


def sendgrid(api, token: str = GOOD_TOKEN) -> SendGridSettings:
    return SendGridSettings(api_token=token, api_url=api.url + "/")


def test_sendgrid_gets_the_documented_json(sendgrid_api):
    message = envelope(7, cc="dan@example.org", attachment=True)
    message = Envelope(SENDER, (*message.recipients, "boss@example.test"), message.raw)

    result = sendgrid_send(sendgrid(sendgrid_api), message)

    assert result.ok and result.accepted == message.recipients
    [request] = sendgrid_api.requests
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {GOOD_TOKEN}"
    [accepted] = sendgrid_api.accepted
    assert accepted.message_id in result.server_reply
    assert accepted.payload == {
        "personalizations": [
            {
                "to": [{"email": CUSTOMER, "name": "Carol Customer"}],
                "cc": [{"email": "dan@example.org", "name": "Dan"}],
                "bcc": [{"email": "boss@example.test"}],
            }
        ],
        "from": {"email": SENDER, "name": "Support team"},
        "reply_to": {"email": "help@example.test"},
        "subject": "Re: Order 7 [#7]",
        "content": [
            {"type": "text/plain", "value": "Your order 7 is on its way.\r\n"},
            {"type": "text/html", "value": "<p>Your order 7 is on its way.</p>\r\n"},
        ],
        "attachments": [
            {
                "content": base64.b64encode(b"%PDF-1.4 fake").decode(),
                "filename": "invoice.pdf",
                "type": "application/pdf",
                "disposition": "attachment",
            }
        ],
        "headers": {
            "Message-ID": "<reply-7@postroom.test>",
            "In-Reply-To": "<question-7@example.org>",
            "References": "<first-7@example.org> <question-7@example.org>",
            "Auto-Submitted": "auto-replied",
        },
    }


def test_sendgrid_gets_unicode_as_text_not_encoded_words():
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = f"Zoë Löwe <{SENDER}>"
    message["To"] = CUSTOMER
    message["Subject"] = "Grüße aus München"
    message.set_content("Schöne Grüße\n")

    payload = sendgrid_payload(Envelope(SENDER, (CUSTOMER,), message.as_bytes()))

    assert payload["from"] == {"email": SENDER, "name": "Zoë Löwe"}
    assert payload["subject"] == "Grüße aus München"
    assert payload["content"] == [{"type": "text/plain", "value": "Schöne Grüße\r\n"}]


def test_sendgrid_400_is_permanent_in_sendgrids_words(sendgrid_api):
    sendgrid_api.fail_next(400, "Does not contain a valid address.", field="from.email")

    result = sendgrid_send(sendgrid(sendgrid_api), envelope(1))

    assert result.error.permanent
    assert str(result.error) == (
        "SendGrid refused the message (HTTP 400: from.email: Does not contain a valid address.)."
    )


@pytest.mark.parametrize("token", ["SG.revoked", READ_ONLY_TOKEN])
def test_sendgrid_401_and_403_are_auth_errors_and_stop_the_batch(sendgrid_api, token):
    with outgoing_session(sendgrid(sendgrid_api, token), NetworkPolicy()) as session:
        results = [session.send(envelope(n)) for n in range(3)]

    assert [r.error.kind for r in results] == ["auth"] * 3
    assert "SendGrid refused the API token" in str(results[0].error)
    assert token not in str(results[0].error)
    assert len(sendgrid_api.requests) == 1


def test_sendgrid_429_waits_as_long_as_it_is_told_and_stops_the_batch(sendgrid_api):
    sendgrid_api.fail_next(429, retry_after=30)

    with outgoing_session(sendgrid(sendgrid_api), NetworkPolicy()) as session:
        results = [session.send(envelope(n)) for n in range(2)]

    assert not results[0].error.permanent and results[0].retry_after == 30
    assert "HTTP 429 (too many requests)" in str(results[0].error)
    assert results[1] == results[0] and len(sendgrid_api.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_sendgrid_5xx_is_transient_and_the_next_message_is_tried(sendgrid_api, status):
    sendgrid_api.fail_next(status)

    with outgoing_session(sendgrid(sendgrid_api), NetworkPolicy()) as session:
        first, second = session.send(envelope(1)), session.send(envelope(2))

    assert not first.ok and not first.error.permanent and f"HTTP {status}" in str(first.error)
    assert second.ok and len(sendgrid_api.accepted) == 1


def test_sendgrid_unreachable_is_transient(closed_port):
    config = SendGridSettings(GOOD_TOKEN, api_url=f"http://127.0.0.1:{closed_port}")

    result = sendgrid_send(config, envelope(1))

    assert isinstance(result.error, ConnectionRefused) and not result.error.permanent


def test_our_payload_passes_the_fixtures_contract_checks():
    """The fixture's validator is what 400s; make sure it would catch what SendGrid refuses."""
    from tests.servers.sendgrid import validate_mail_send

    good = sendgrid_payload(envelope(1, attachment=True))
    assert validate_mail_send(good) == []
    bad = {**good, "content": list(reversed(good["content"])), "headers": {"To": "x"}}
    fields = {error["field"] for error in validate_mail_send(bad)}
    assert fields == {"content", "headers"}


# --- The Sent folder --------------------------------------------------------------------------


def incoming(dovecot, user, password: str | None = None) -> IncomingSettings:
    server = ServerAddress("127.0.0.1", dovecot.ports.imaps, "ssl", True, TIMEOUT)
    return IncomingSettings("imap", server, Credentials(user.name, password or user.password))


def test_it_files_a_seen_copy_in_the_sent_folder(dovecot, mail_user):
    dovecot.create_folder(mail_user, "Sent")

    errors = imap_append_sent(incoming(dovecot, mail_user), POLICY, "Sent", [built(1), built(2)])

    assert errors == [None, None]
    with dovecot.imap(mail_user) as client:
        client.select_folder("Sent", readonly=True)
        found = client.fetch(client.search("ALL"), ["FLAGS", "BODY.PEEK[]"])
    assert sorted(item[b"BODY[]"] for item in found.values()) == [built(1), built(2)]
    assert all(b"\\Seen" in item[b"FLAGS"] for item in found.values())


def test_it_creates_a_missing_sent_folder(dovecot, mail_user):
    imap_append_sent(incoming(dovecot, mail_user), POLICY, "Sent Items", [built(1)])

    [uid] = dovecot.folder_uids(mail_user, "Sent Items")
    assert dovecot.fetch_raw(mail_user, uid, "Sent Items") == built(1)


def test_a_refused_login_for_the_copy_raises(dovecot, mail_user):
    with pytest.raises(AuthenticationFailed):
        imap_append_sent(incoming(dovecot, mail_user, "wrong"), POLICY, "Sent", [built(1)])
