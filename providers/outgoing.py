"""Sending mail: one small interface over SMTP and SendGrid, and the copy to the Sent folder.

`outgoing_session(settings, policy)` takes SmtpSettings or SendGridSettings (a channel's server
type picks which) and yields a session whose `send(envelope)` returns a SendResult. It never
raises for a message: each result says sent, or the error, whose `permanent` flag and `kind`
("auth" pauses the channel's outbox) tell the caller what to do. Messages arrive fully built:
a resend is the same bytes with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.policy
import imaplib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Protocol

import aiosmtplib
import httpx
from imapclient import SEEN, IMAPClient

from providers.config import IncomingSettings, NetworkPolicy, SendGridSettings, SmtpSettings
from providers.errors import (
    AuthenticationFailed,
    ConnectionTimedOut,
    ProtocolError,
    ProviderError,
    auth_refused,
    server_said,
)
from providers.imap import imap_connect
from providers.sendgrid import DEFAULT_TIMEOUT, error_text, network_error
from providers.smtp import smtp_connect

logger = logging.getLogger(__name__)

# RFC 4954 §6: 530 authentication required, 534 mechanism too weak, 535 credentials invalid,
# 538 encryption required. A login problem, not this message's: the caller pauses.
SMTP_AUTH_CODES = frozenset({530, 534, 535, 538})
SMTP_CLOSING = 421  # RFC 5321 §3.8: the server is closing the session
# Headers SendGrid builds from its own fields, or refuses in "headers" (its reserved keys).
SENDGRID_OWN_HEADERS = frozenset(
    {
        *("from", "to", "cc", "bcc", "subject", "reply-to", "date", "mime-version"),
        *("content-type", "content-transfer-encoding", "content-disposition"),
        *("received", "dkim-signature", "x-sg-id", "x-sg-eid"),
    }
)


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: ProviderError | None = None
    accepted: tuple[str, ...] = ()  # recipients the server took (SMTP may refuse some)
    server_reply: str = ""
    retry_after: float | None = None  # seconds the server asked us to wait (SendGrid 429)


class OutgoingSession(Protocol):
    """What the outbox needs of a sender: send one message, then the next, then close."""

    def send(self, envelope: Envelope) -> SendResult: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def outgoing_session(
    settings: SmtpSettings | SendGridSettings, policy: NetworkPolicy
) -> Iterator[OutgoingSession]:
    """A session on the channel's sender; each send returns when the server has answered, so
    the caller can commit that message's outcome before the next one is sent."""
    session: OutgoingSession
    if isinstance(settings, SendGridSettings):
        session = SendGridSession(settings)
    else:
        session = SmtpSession(settings, policy)
    try:
        yield session
    finally:
        session.close()


def smtp_send_many(
    settings: SmtpSettings, policy: NetworkPolicy, envelopes: Sequence[Envelope]
) -> list[SendResult]:
    """Send over one session: one login for all of them."""
    with outgoing_session(settings, policy) as session:
        return [session.send(envelope) for envelope in envelopes]


# --- SMTP -------------------------------------------------------------------------------------


class SmtpSession:
    """One aiosmtplib session for many messages, stepped from synchronous code.

    The event loop runs only inside send() and close(), so between two messages the caller
    may commit the first one's outcome with the ORM. (A loop on a thread of its own, to send
    the next message during that commit, was measured slower: both sides are Python and
    fight over the GIL.) The session connects on the first message and again after one that
    broke it; a failure to connect or log in is the answer for every later message, without
    asking again.
    """

    def __init__(self, settings: SmtpSettings, policy: NetworkPolicy) -> None:
        self._settings = settings
        self._policy = policy
        self._loop = asyncio.new_event_loop()
        self._connection: contextlib.AbstractAsyncContextManager | None = None
        self._client: aiosmtplib.SMTP | None = None
        self._stuck: SendResult | None = None

    def send(self, envelope: Envelope) -> SendResult:
        if self._stuck is not None:
            return self._stuck
        if self._client is None:
            try:
                self._client = self._loop.run_until_complete(self._open())
            except ProviderError as err:
                self._stuck = SendResult(ok=False, error=err)
                return self._stuck
        send = _smtp_send_one(self._client, self._settings, envelope)
        result, usable = self._loop.run_until_complete(send)
        if result.error is not None and result.error.kind == "auth":
            self._stuck = result  # the next message would hear the same: don't ask
        if not (usable and self._client.is_connected):
            self._end()
        return result

    def close(self) -> None:
        try:
            self._end()
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    async def _open(self) -> aiosmtplib.SMTP:
        connection = smtp_connect(self._settings, self._policy)
        client = await connection.__aenter__()
        self._connection = connection
        return client

    def _end(self) -> None:
        connection, self._connection, self._client = self._connection, None, None
        if connection is not None:
            try:  # QUIT; a session that broke is closed without waiting
                self._loop.run_until_complete(connection.__aexit__(None, None, None))
            except ProviderError as err:
                logger.debug("closing the SMTP session failed: %s", err)


async def _smtp_send_one(
    client: aiosmtplib.SMTP, settings: SmtpSettings, envelope: Envelope
) -> tuple[SendResult, bool]:
    """The result, and whether the session can carry the next message."""
    server, secrets = settings.server, _secrets(settings)
    options = [] if _ascii(envelope) else ["SMTPUTF8"]
    try:
        refused, reply = await client.sendmail(
            envelope.mail_from, list(envelope.recipients), envelope.raw, mail_options=options
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return SendResult(ok=False, error=_recipients_refused(exc, server.host, secrets)), True
    except aiosmtplib.SMTPResponseException as exc:
        error = _reply_error(exc.code, exc.message, server.host, secrets)
        return SendResult(ok=False, error=error), exc.code != SMTP_CLOSING
    except (ValueError, aiosmtplib.SMTPNotSupported) as exc:
        # An address aiosmtplib will not put on the wire, or UTF-8 the server cannot take.
        error = ProtocolError(
            f"The message cannot be sent to {server.host}: {exc}.", permanent=True
        )
        return SendResult(ok=False, error=error), True
    except (aiosmtplib.SMTPException, OSError) as exc:
        return SendResult(ok=False, error=_broken(exc, settings)), False
    accepted = tuple(r for r in envelope.recipients if r not in refused)
    return SendResult(ok=True, accepted=accepted, server_reply=_reply_text(reply, refused)), True


def _reply_error(code: int, message: str, host: str, secrets: tuple[str, ...]) -> ProviderError:
    said = server_said(f"{code} {message}", *secrets)
    if code in SMTP_AUTH_CODES:
        return auth_refused(host, said, *secrets)
    if code >= 500:
        return ProtocolError(f"{host} refused the message (server said: {said}).", permanent=True)
    return ProtocolError(f"{host} deferred the message (server said: {said}); it will be retried.")


def _recipients_refused(
    exc: aiosmtplib.SMTPRecipientsRefused, host: str, secrets: tuple[str, ...]
) -> ProviderError:
    refusals = exc.recipients
    if any(r.code in SMTP_AUTH_CODES for r in refusals):
        first = next(r for r in refusals if r.code in SMTP_AUTH_CODES)
        return _reply_error(first.code, first.message, host, secrets)
    said = "; ".join(server_said(f"{r.code} {r.message}", *secrets) for r in refusals)
    permanent = all(r.code >= 500 for r in refusals)
    tail = "." if permanent else "; it will be retried."
    return ProtocolError(
        f"{host} refused every recipient (server said: {said}){tail}", permanent=permanent
    )


def _broken(exc: BaseException, settings: SmtpSettings) -> ProviderError:
    server = settings.server
    where = f"{server.host} port {server.port}"
    if isinstance(exc, TimeoutError):
        return ConnectionTimedOut(
            f"{where} stopped answering during the message (nothing within {server.timeout:g} s);"
            " it will be sent again with the same Message-ID."
        )
    said = server_said(str(exc) or type(exc).__name__, *_secrets(settings))
    return ProtocolError(
        f"The SMTP connection to {where} broke during the message ({said}); it will be sent "
        "again with the same Message-ID."
    )


def _reply_text(reply: str, refused: dict[str, aiosmtplib.SMTPResponse]) -> str:
    text = server_said(reply)
    if refused:
        lost = "; ".join(
            f"{addr} ({r.code} {server_said(r.message)})" for addr, r in refused.items()
        )
        text += f" Refused recipients: {lost}."
    return text


def _ascii(envelope: Envelope) -> bool:
    return envelope.mail_from.isascii() and all(r.isascii() for r in envelope.recipients)


def _secrets(settings: SmtpSettings) -> tuple[str, ...]:
    return (settings.credentials.secret,) if settings.credentials else ()


# --- SendGrid v3 mail send --------------------------------------------------------------------


def sendgrid_send(settings: SendGridSettings, envelope: Envelope) -> SendResult:
    with outgoing_session(settings, NetworkPolicy()) as session:
        return session.send(envelope)


class SendGridSession:
    """POST /v3/mail/send per message over one keep-alive connection.

    The API address is the deployment's (POSTROOM_SENDGRID_API_URL), not an administrator's
    entry, so it is not put through netguard.
    """

    def __init__(self, settings: SendGridSettings, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._url = settings.api_url.rstrip("/") + "/v3/mail/send"
        self._token = settings.api_token
        self._timeout = timeout
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, headers=headers)
        self._stuck: SendResult | None = None

    def send(self, envelope: Envelope) -> SendResult:
        if self._stuck is not None:
            return self._stuck
        result = _sendgrid_one(self._client, self._url, self._token, envelope, self._timeout)
        if result.error is not None and (
            result.error.kind == "auth" or result.retry_after is not None
        ):
            self._stuck = result  # a refused token or a rate limit answers every message alike
        return result

    def close(self) -> None:
        self._client.close()


def _sendgrid_one(
    client: httpx.Client, url: str, token: str, envelope: Envelope, timeout: float
) -> SendResult:
    try:
        payload = sendgrid_payload(envelope)
    except ValueError as exc:
        return SendResult(ok=False, error=ProtocolError(str(exc), permanent=True))
    try:
        response = client.post(url, json=payload)
    except httpx.HTTPError as exc:
        return SendResult(ok=False, error=network_error(exc, httpx.URL(url), timeout))
    return _sendgrid_result(response, token, envelope)


def _sendgrid_result(response: httpx.Response, token: str, envelope: Envelope) -> SendResult:
    status, said = response.status_code, error_text(response, token)
    if response.is_success:
        reply = f"HTTP {status}, X-Message-Id {response.headers.get('X-Message-Id', '?')}"
        return SendResult(ok=True, accepted=envelope.recipients, server_reply=reply)
    if status in (401, 403):
        error: ProviderError = AuthenticationFailed(
            f"SendGrid refused the API token: {said}. Create an API key with Mail Send "
            "permission and paste it again."
        )
        return SendResult(ok=False, error=error)
    if status == 429 or status >= 500:
        error = ProtocolError(f"SendGrid answered HTTP {status} ({said}); it will be retried.")
        return SendResult(ok=False, error=error, retry_after=_retry_after(response))
    if response.is_redirect:
        said = "a redirect Postroom does not follow: check POSTROOM_SENDGRID_API_URL"
    error = ProtocolError(f"SendGrid refused the message (HTTP {status}: {said}).", permanent=True)
    return SendResult(ok=False, error=error)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After (seconds or an HTTP date, RFC 9110 §10.2.3), else SendGrid's reset time."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    reset = response.headers.get("X-RateLimit-Reset", "").strip()
    if reset.isdigit():
        return max(0.0, int(reset) - time.time())
    return 0.0 if response.status_code == 429 else None


def sendgrid_payload(envelope: Envelope) -> dict:
    """The v3 mail-send JSON for a built message: SendGrid rebuilds the MIME from this."""
    message = BytesParser(policy=email.policy.default).parsebytes(envelope.raw)
    assert isinstance(message, EmailMessage)
    [sender] = _addresses(message, "From")[:1] or [None]
    if sender is None:
        raise ValueError("The message has no From address.")
    payload: dict = {
        "personalizations": [_personalization(message, envelope.recipients)],
        "from": sender,
        "subject": str(message.get("Subject", "")),
        "content": _content(message),
    }
    if reply_to := _addresses(message, "Reply-To"):
        payload["reply_to"] = reply_to[0]
    if attachments := [_attachment(part) for part in message.iter_attachments()]:
        payload["attachments"] = attachments
    if headers := _custom_headers(message):
        payload["headers"] = headers
    return payload


def _personalization(message: EmailMessage, recipients: Sequence[str]) -> dict:
    """To and Cc as the headers name them, every other envelope recipient as Bcc.

    SendGrid refuses an address twice in one personalization (case-insensitively).
    """
    wanted = {r.lower() for r in recipients}
    seen: set[str] = set()
    block: dict[str, list[dict]] = {}
    for key, header in (("to", "To"), ("cc", "Cc")):
        for address in _addresses(message, header):
            email_lower = address["email"].lower()
            if email_lower in wanted and email_lower not in seen:
                seen.add(email_lower)
                block.setdefault(key, []).append(address)
    for recipient in recipients:
        if recipient.lower() not in seen:
            seen.add(recipient.lower())
            block.setdefault("bcc", []).append({"email": recipient})
    if "to" not in block:
        raise ValueError("SendGrid needs a To recipient, and the message has none.")
    return block


def _addresses(message: EmailMessage, name: str) -> list[dict]:
    header = message.get(name)
    if header is None:
        return []
    found = []
    for address in header.addresses:
        entry = {"email": address.addr_spec}
        if address.display_name:
            entry["name"] = address.display_name
        found.append(entry)
    return found


def _content(message: EmailMessage) -> list[dict]:
    """text/plain first, then text/html: the order SendGrid requires."""
    content = []
    for subtype in ("plain", "html"):
        part = message.get_body((subtype,))
        if part is not None and (value := part.get_content()):
            content.append({"type": f"text/{subtype}", "value": value})
    if not content:
        raise ValueError("The message has no text or HTML body for SendGrid to send.")
    return content


def _attachment(part: EmailMessage) -> dict:
    data = part.get_payload(decode=True) or b""
    entry = {
        "content": base64.b64encode(data).decode("ascii"),
        "filename": part.get_filename() or "attachment",
        "type": part.get_content_type(),
        "disposition": "inline" if part.get_content_disposition() == "inline" else "attachment",
    }
    if entry["disposition"] == "inline" and (content_id := part.get("Content-ID")):
        entry["content_id"] = str(content_id).strip("<>")
    return entry


def _custom_headers(message: EmailMessage) -> dict[str, str]:
    """Message-ID, In-Reply-To, References, Auto-Submitted…: SendGrid passes them through."""
    return {
        name: " ".join(str(value).split())
        for name, value in message.items()
        if name.lower() not in SENDGRID_OWN_HEADERS
    }


# --- The Sent folder --------------------------------------------------------------------------


def imap_append_sent(
    settings: IncomingSettings, policy: NetworkPolicy, folder: str, messages: Sequence[bytes]
) -> list[ProviderError | None]:
    """APPEND each message to folder, flagged \\Seen, creating the folder if it is missing.

    One error per message (None: copied); a connection or login failure raises.
    """
    with imap_connect(settings, policy) as client:
        _ensure_folder(client, folder)
        return [_append(client, folder, raw) for raw in messages]


def _ensure_folder(client: IMAPClient, folder: str) -> None:
    if client.folder_exists(folder):
        return
    try:
        client.create_folder(folder)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:
        if not client.folder_exists(folder):  # someone else may just have created it
            raise
    logger.info("created the sent folder %r on %s", folder, client.host)


def _append(client: IMAPClient, folder: str, raw: bytes) -> ProviderError | None:
    try:
        client.append(folder, raw, flags=(SEEN,))
    except imaplib.IMAP4.abort:
        raise  # the connection is gone: imap_connect maps it
    except imaplib.IMAP4.error as exc:
        said = server_said(str(exc).split(" failed: ", 1)[-1])
        return ProtocolError(f"{client.host} would not store the copy (server said: {said}).")
    return None
