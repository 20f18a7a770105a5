"""The SMTP test server behaves like a real submission server, seen through aiosmtplib."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiosmtplib
import pytest

from tests.servers.smtp import SmtpTestServer

T = TypeVar("T")

TIMEOUT = 5.0
USER = "agent@postroom.test"
PASSWORD = "correct horse battery staple"
SENDER = "support@postroom.test"
CUSTOMER = "customer@example.com"
# CRLF line endings and a trailing CRLF so the bytes go over the wire unchanged; the dot
# line checks that dot-stuffing is undone and the non-ASCII header that bytes stay bytes.
RAW = (
    b"From: Support <support@postroom.test>\r\n"
    b"To: customer@example.com\r\n"
    b"Subject: Re: [#42] Where is my parcel?\r\n"
    b"Message-ID: <reply-42@postroom.test>\r\n"
    b"X-Agent: Ren\xc3\xa9e\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".this line starts with a dot\r\n"
    b"..and this one with two\r\n"
    b"\r\n"
    b"-- \r\n"
    b"Postroom\r\n"
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine to completion, never longer than the test allows."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 2))


def client(smtp: SmtpTestServer, port: int, **kwargs: Any) -> aiosmtplib.SMTP:
    kwargs.setdefault("tls_context", smtp.client_tls_context())
    return aiosmtplib.SMTP(hostname=smtp.host, port=port, timeout=TIMEOUT, **kwargs)


async def send(
    smtp: SmtpTestServer, *, password: str = PASSWORD, recipients: tuple[str, ...] = (CUSTOMER,)
) -> None:
    """Submit RAW the way the app will: STARTTLS, then AUTH with whatever fits."""
    await aiosmtplib.send(
        RAW,
        sender=SENDER,
        recipients=list(recipients),
        hostname=smtp.host,
        port=smtp.starttls_port,
        start_tls=True,
        tls_context=smtp.client_tls_context(),
        username=USER,
        password=password,
        timeout=TIMEOUT,
    )


@pytest.fixture
def smtp_with_user(smtp: SmtpTestServer) -> SmtpTestServer:
    smtp.add_user(USER, PASSWORD)
    return smtp


def test_it_records_a_message_sent_through_starttls_with_auth_plain(
    smtp_with_user: SmtpTestServer,
) -> None:
    smtp = smtp_with_user

    async def scenario() -> None:
        async with client(smtp, smtp.starttls_port, start_tls=True) as c:
            await c.ehlo()  # the low-level auth_* calls do not EHLO after STARTTLS
            await c.auth_plain(USER, PASSWORD)
            await c.sendmail(SENDER, [CUSTOMER, "cc@example.com"], RAW)

    run(scenario())

    [message] = smtp.wait_for(1, timeout=TIMEOUT)
    assert message.raw == RAW
    assert message.mail_from == SENDER
    assert message.rcpt_tos == (CUSTOMER, "cc@example.com")
    assert message.login == USER
    assert (message.listener, message.port, message.tls) == ("starttls", smtp.starttls_port, True)
    assert message.tls_version is not None and message.tls_version.startswith("TLS")
    assert datetime.now(UTC) - message.received_at < timedelta(seconds=TIMEOUT)
    assert message.message["Subject"] == "Re: [#42] Where is my parcel?"


def test_it_records_a_message_sent_through_starttls_with_auth_login(
    smtp_with_user: SmtpTestServer,
) -> None:
    smtp = smtp_with_user

    async def scenario() -> None:
        async with client(smtp, smtp.starttls_port, start_tls=True) as c:
            await c.ehlo()  # the low-level auth_* calls do not EHLO after STARTTLS
            await c.auth_login(USER, PASSWORD)
            await c.sendmail(SENDER, [CUSTOMER], RAW)

    run(scenario())

    [message] = smtp.wait_for(1, timeout=TIMEOUT)
    assert (message.raw, message.mail_from, message.rcpt_tos) == (RAW, SENDER, (CUSTOMER,))
    assert (message.login, message.listener, message.tls) == (USER, "starttls", True)


def test_it_accepts_a_message_over_implicit_tls(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user

    run(
        aiosmtplib.send(
            RAW,
            sender=SENDER,
            recipients=[CUSTOMER],
            hostname=smtp.host,
            port=smtp.smtps_port,
            use_tls=True,
            tls_context=smtp.client_tls_context(),
            username=USER,
            password=PASSWORD,
            timeout=TIMEOUT,
        )
    )

    [message] = smtp.wait_for(1, timeout=TIMEOUT)
    assert (message.raw, message.login) == (RAW, USER)
    assert (message.listener, message.port, message.tls) == ("smtps", smtp.smtps_port, True)


def test_it_accepts_auth_in_the_clear_on_the_plain_port(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user

    async def scenario() -> None:
        async with client(smtp, smtp.plain_port, start_tls=False) as c:
            await c.login(USER, PASSWORD)
            await c.sendmail(SENDER, [CUSTOMER], RAW)

    run(scenario())

    [message] = smtp.wait_for(1, timeout=TIMEOUT)
    assert (message.listener, message.tls, message.tls_version) == ("plain", False, None)
    assert message.login == USER


def test_it_refuses_auth_before_starttls(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user

    async def scenario() -> tuple[bool, bool, int]:
        async with client(smtp, smtp.starttls_port, start_tls=False) as c:
            await c.ehlo()
            response = await c.execute_command(b"AUTH", b"PLAIN")
            return c.supports_extension("starttls"), c.supports_extension("auth"), response.code

    offers_starttls, offers_auth, code = run(scenario())

    assert (offers_starttls, offers_auth, code) == (True, False, 538)


def test_it_allows_auth_before_starttls_when_told_to(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    smtp.auth_require_tls = False

    async def scenario() -> None:
        async with client(smtp, smtp.starttls_port, start_tls=False) as c:
            await c.ehlo()  # the low-level auth_* calls do not EHLO after STARTTLS
            await c.auth_plain(USER, PASSWORD)
            await c.sendmail(SENDER, [CUSTOMER], RAW)

    run(scenario())

    [message] = smtp.wait_for(1, timeout=TIMEOUT)
    assert (message.listener, message.tls, message.login) == ("starttls", False, USER)


def test_it_refuses_a_wrong_password_with_535(smtp_with_user: SmtpTestServer) -> None:
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        run(send(smtp_with_user, password="wrong"))

    assert refused.value.code == 535
    assert smtp_with_user.messages == []


def test_it_refuses_an_unauthenticated_send_when_auth_is_required(smtp: SmtpTestServer) -> None:
    async def scenario() -> None:
        async with client(smtp, smtp.starttls_port, start_tls=True) as c:
            await c.sendmail(SENDER, [CUSTOMER], RAW)

    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        run(scenario())

    assert refused.value.code == 530
    assert smtp.messages == []


def test_it_fails_one_send_at_rcpt_then_accepts_the_next(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    smtp.fail_next(stage="RCPT", code=451, text="4.3.0 Try again later")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        run(send(smtp))
    [recipient_error] = refused.value.recipients
    assert (recipient_error.code, recipient_error.message) == (451, "4.3.0 Try again later")
    assert smtp.messages == []

    run(send(smtp))
    assert [m.raw for m in smtp.wait_for(1, timeout=TIMEOUT)] == [RAW]


def test_it_fails_every_recipient_of_a_failing_transaction(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    smtp.fail_next(stage="RCPT", code=550, text="5.1.1 No such user")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        run(send(smtp, recipients=(CUSTOMER, "cc@example.com")))

    assert [e.code for e in refused.value.recipients] == [550, 550]


def test_it_fails_at_data_with_550(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    smtp.fail_next(stage="DATA", code=550, text="5.7.1 Message rejected as spam")

    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        run(send(smtp))

    assert (refused.value.code, refused.value.message) == (550, "5.7.1 Message rejected as spam")
    assert smtp.messages == []


def test_it_fails_at_mail_as_many_times_as_asked(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    smtp.fail_next(stage="MAIL", code=421, text="4.7.0 Too many connections", times=2)

    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            run(send(smtp))
        assert refused.value.code == 421
    run(send(smtp))

    assert len(smtp.wait_for(1, timeout=TIMEOUT)) == 1


def test_it_drops_the_connection_in_the_middle_of_data(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    smtp.drop_next(stage="DATA")

    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        run(send(smtp))
    assert smtp.messages == []

    run(send(smtp))
    assert len(smtp.wait_for(1, timeout=TIMEOUT)) == 1


def test_it_forgets_planned_failures_and_messages_on_reset(smtp_with_user: SmtpTestServer) -> None:
    smtp = smtp_with_user
    run(send(smtp))
    smtp.wait_for(1, timeout=TIMEOUT)
    smtp.fail_next(stage="DATA")
    smtp.drop_next(stage="RCPT")

    smtp.reset()
    smtp.add_user(USER, PASSWORD)
    run(send(smtp))

    assert len(smtp.wait_for(1, timeout=TIMEOUT)) == 1


def test_it_gives_up_waiting_for_messages_that_never_come(smtp: SmtpTestServer) -> None:
    with pytest.raises(TimeoutError, match="expected 1 message"):
        smtp.wait_for(1, timeout=0.1)


def test_it_rejects_a_failure_plan_it_cannot_carry_out(smtp: SmtpTestServer) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        smtp.fail_next(stage="DATA", code=250)
    with pytest.raises(ValueError, match="stage must be one of"):
        smtp.fail_next(stage="QUIT")  # type: ignore[arg-type]
