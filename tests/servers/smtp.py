"""A real SMTP submission server for tests: aiosmtpd on its own asyncio loop in a thread.

Three loopback listeners share one set of users, one record of accepted messages and one
queue of planned failures:

- ``starttls_port``: a plain connection that advertises STARTTLS, like port 587. AUTH is
  offered only after STARTTLS unless ``auth_require_tls`` is turned off.
- ``smtps_port``: implicit TLS from the first byte, like port 465.
- ``plain_port``: no TLS at all and AUTH in the clear, for security "none".

The session-scoped ``smtp_server`` fixture starts it once; tests use the function-scoped
``smtp`` fixture, which hands over the same server with records, failures, users and
settings reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import weakref
from base64 import b64decode
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.tls import CertPair, make_self_signed

Stage = Literal["MAIL", "RCPT", "DATA"]
ListenerName = Literal["starttls", "smtps", "plain"]

STAGES: tuple[Stage, ...] = ("MAIL", "RCPT", "DATA")
HOST = "127.0.0.1"
# Fixed so aiosmtpd does not call socket.getfqdn() (a DNS lookup) on every connection.
SERVER_HOSTNAME = "smtp.postroom.test"

T = TypeVar("T")

_AIOSMTPD_LOG = logging.getLogger("mail.log")


def _drop_login_data_warning(record: logging.LogRecord) -> bool:
    # aiosmtpd itself sets its deprecated Session.login_data on every successful AUTH and
    # logs a WARNING about it, which would show up in every failing test's captured log.
    return "login_data is deprecated" not in record.getMessage()


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted (it answered 250 to the end of DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    # The DATA content as the client meant it: CRLF line endings, dot-stuffing undone,
    # without the terminating "." line. Bytes, never decoded.
    raw: bytes
    login: str | None
    listener: ListenerName
    port: int
    tls: bool
    tls_version: str | None
    helo: str | None
    mail_options: tuple[str, ...]
    received_at: datetime

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class _Listener:
    name: ListenerName
    port: int


@dataclass(frozen=True)
class _Fault:
    stage: Stage
    reply: str | None  # None: close the connection instead of replying


class _Envelope(Envelope):
    """aiosmtpd's envelope plus the fault planned for this transaction, if any."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: _Fault | None = None


class _ConnectionSMTP(SMTP):
    """One client connection; remembers which listener it came in on, and is counted."""

    def __init__(
        self, handler: _Handler, listener: _Listener, server: SmtpTestServer, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.listener = listener
        self._server = server
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS: still the same connection.
        if not self._counted:
            self._counted = True
            self._server._count_connection()
        super().connection_made(transport)

    def _create_envelope(self) -> _Envelope:
        # aiosmtpd makes a fresh envelope per transaction (EHLO, RSET, after DATA), so a
        # fault stored on it can never leak into the next transaction.
        return _Envelope()


class _Handler:
    """aiosmtpd hooks. aiosmtpd scans this object for handle_* hooks and auth_* methods
    (it advertises each auth_<MECHANISM>). No other name here may start with ``auth_``.
    """

    def __init__(self, server: SmtpTestServer) -> None:
        self._server = server

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """Google's XOAUTH2: "user=<login>^Aauth=Bearer <token>^A^A", checked by asking the
        OAuth provider's introspection endpoint (RFC 7662), as Dovecot's oauth2 passdb does.
        A refused token gets the JSON error challenge; the client answers with an empty line."""
        login, token = _xoauth2_fields(await _initial_response(smtp, args))
        return await self._token_result(smtp, "XOAUTH2", login, token, {"status": "401"}, b"")

    async def auth_OAUTHBEARER(self, smtp: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """RFC 7628: "n,a=<login>,^Ahost=..^Aport=..^Aauth=Bearer <token>^A^A", checked like
        XOAUTH2. A refused token gets the JSON error challenge, which the client must answer
        with a single ^A (3.2.3); anything else is a client bug, answered 501."""
        login, token = _oauthbearer_fields(await _initial_response(smtp, args))
        error = {"status": "invalid_token"}
        return await self._token_result(smtp, "OAUTHBEARER", login, token, error, b"\x01")

    async def _token_result(
        self, smtp: SMTP, mechanism: str, login: str, token: str, error: dict, answer: bytes
    ) -> AuthResult:
        if login and token and await self._server.check_token(login, token):
            self._server.token_logins.append((mechanism, login))
            return AuthResult(success=True, auth_data=login)
        error = {**error, "schemes": "bearer", "scope": "mail"}
        reply = await smtp.challenge_auth(json.dumps(error))
        if reply is MISSING:  # aiosmtpd has answered 501 already
            return AuthResult(success=False, handled=True)
        if reply != answer:
            wrong = f"501 5.5.2 {mechanism} wants {answer!r} after an error challenge"
            return AuthResult(success=False, handled=False, message=wrong)
        return AuthResult(success=False, handled=False)

    def authenticate(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        # PLAIN and LOGIN both arrive here as LoginPassword; handled=False makes aiosmtpd
        # answer "535 5.7.8 Authentication credentials invalid" itself.
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            if self._server.check_password(login, auth_data.password.decode("utf-8", "replace")):
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(
        self,
        smtp: _ConnectionSMTP,
        session: Session,
        envelope: _Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Checked here rather than with aiosmtpd's auth_required, which warns on every
        # connection of the plain listener and cannot be changed per test.
        if self._server.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        # A transaction starts at MAIL, so this is where it takes its planned fault.
        envelope.fault = self._server.take_fault()
        if (reply := await _fault_reply(smtp, envelope, "MAIL")) is not None:
            return reply
        # Returning a status means aiosmtpd leaves the envelope to us.
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        smtp: _ConnectionSMTP,
        session: Session,
        envelope: _Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if (reply := await _fault_reply(smtp, envelope, "RCPT")) is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, smtp: _ConnectionSMTP, session: Session, envelope: _Envelope
    ) -> str:
        if (reply := await _fault_reply(smtp, envelope, "DATA")) is not None:
            return reply
        self._server.record(_record(smtp, session, envelope))
        return "250 2.0.0 OK: queued"


def _b64(text: str) -> bytes:
    try:
        return b64decode(text.encode(), validate=True)
    except ValueError:
        return b""


async def _initial_response(smtp: SMTP, args: list[str]) -> bytes:
    """The SASL initial response: on the AUTH line, or asked for with an empty challenge."""
    if len(args) > 1:
        return _b64(args[1])
    answer = await smtp.challenge_auth("")
    return b"" if answer is MISSING else answer


def _oauthbearer_fields(blob: bytes) -> tuple[str, str]:
    """The login (the GS2 header's a=, unescaped) and the token of an OAUTHBEARER message."""
    header, _, rest = blob.decode("utf-8", "replace").partition("\x01")
    authzid = next((p[2:] for p in header.split(",") if p.startswith("a=")), "")
    login = authzid.replace("=2C", ",").replace("=3D", "=")
    fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    return login, fields.get("auth", "").removeprefix("Bearer ").strip()


def _xoauth2_fields(blob: bytes) -> tuple[str, str]:
    fields = dict(
        part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part
    )
    return fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ").strip()


def _introspect(url: str, token: str) -> dict:
    with urlopen(url, data=urlencode({"token": token}).encode(), timeout=5) as response:  # noqa: S310
        return json.load(response)


async def _fault_reply(smtp: _ConnectionSMTP, envelope: _Envelope, stage: Stage) -> str | None:
    """The reply the planned fault gives at this stage, or None to carry on normally."""
    fault = envelope.fault
    if fault is None or fault.stage != stage:
        return None
    if fault.reply is not None:
        return fault.reply
    await _drop(smtp)
    return "421 4.4.2 Connection should have been dropped"


async def _drop(smtp: _ConnectionSMTP, grace: float = 10.0) -> None:
    """Close the connection without a reply, then wait to be cancelled.

    Closing makes aiosmtpd's connection_lost() cancel the session task that is awaiting
    this hook, so no reply is ever written. The grace period only bounds the wait if
    that somehow does not happen.
    """
    if smtp.transport is not None:
        smtp.transport.close()
    await asyncio.sleep(grace)


def _record(smtp: _ConnectionSMTP, session: Session, envelope: _Envelope) -> ReceivedMessage:
    assert smtp.transport is not None
    assert envelope.mail_from is not None
    assert envelope.original_content is not None
    # After STARTTLS smtp.transport is the TLS transport, so this covers both TLS kinds.
    ssl_object = smtp.transport.get_extra_info("ssl_object")
    return ReceivedMessage(
        mail_from=envelope.mail_from,
        rcpt_tos=tuple(envelope.rcpt_tos),
        raw=bytes(envelope.original_content),
        login=session.auth_data if session.authenticated else None,
        listener=smtp.listener.name,
        port=smtp.listener.port,
        tls=ssl_object is not None,
        tls_version=ssl_object.version() if ssl_object is not None else None,
        helo=session.host_name,
        mail_options=tuple(envelope.mail_options),
        received_at=datetime.now(UTC),
    )


class SmtpTestServer:
    """The listeners, the users, what was received and what should go wrong next."""

    host = HOST

    def __init__(self, certs: CertPair, *, timeout: float = 10.0, idle_timeout: float = 30.0):
        self.cert_path: Path = certs.cert_path
        self._certs = certs
        self._timeout = timeout  # for starting and stopping
        self._idle_timeout = idle_timeout  # aiosmtpd drops idle clients after this
        self._handler = _Handler(self)
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._faults: deque[_Fault] = deque()
        self._users: dict[str, str] = {}
        self._connections: weakref.WeakSet[_ConnectionSMTP] = weakref.WeakSet()
        self._opened = 0  # connections accepted since the last reset
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self.starttls_port = self.smtps_port = self.plain_port = 0
        self.reset_settings()

    # --- Settings --------------------------------------------------------------------------

    def reset_settings(self) -> None:
        # Require AUTH before MAIL, checked per transaction.
        self.auth_required = True
        # STARTTLS listener only: offer AUTH only after STARTTLS. Read when a connection
        # opens, so a change applies to connections opened afterwards.
        self.auth_require_tls = True
        # AUTH mechanisms not to offer, e.g. ("PLAIN",) for a LOGIN-only server. Read when a
        # connection opens.
        self.auth_exclude: tuple[str, ...] = ()
        # Where XOAUTH2 and OAUTHBEARER tokens are checked (a provider's introspection
        # endpoint); empty: every token is refused.
        self.oauth_introspection_url = ""
        # The token logins that succeeded, (mechanism, login), oldest first.
        self.token_logins: list[tuple[str, str]] = []

    def add_user(self, username: str, password: str) -> None:
        with self._lock:
            self._users[username] = password

    def check_password(self, username: str, password: str) -> bool:
        with self._lock:
            return username in self._users and self._users[username] == password

    async def check_token(self, login: str, token: str) -> bool:
        url = self.oauth_introspection_url
        if not url:
            return False
        answer = await asyncio.to_thread(_introspect, url, token)
        return bool(answer.get("active")) and answer.get("email", "").lower() == login.lower()

    # --- Received messages -----------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot, oldest first."""
        with self._lock:
            return list(self._messages)

    def record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least count messages have arrived; return them all."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout}s, got {len(self._messages)}"
                )
            return list(self._messages)

    # --- Planned failures ------------------------------------------------------------------

    def fail_next(
        self,
        stage: Stage = "DATA",
        code: int = 451,
        text: str = "4.3.0 Try again later",
        times: int = 1,
    ) -> None:
        """The next `times` transactions get `code text` at `stage` instead of success.

        A transaction starts at MAIL; with several recipients every RCPT of a failing
        transaction gets the reply. Plans queue up in the order they were made.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"a failure needs a 4xx or 5xx code, not {code}")
        self._plan(_Fault(_check_stage(stage), f"{code} {text}"), times)

    def drop_next(self, stage: Stage = "DATA", times: int = 1) -> None:
        """The next `times` transactions see the connection closed, unanswered, at `stage`.

        At DATA the whole message has been read when the connection closes, so the client
        cannot tell whether it was delivered. It is not recorded.
        """
        self._plan(_Fault(_check_stage(stage), None), times)

    def _plan(self, fault: _Fault, times: int) -> None:
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._lock:
            self._faults.extend([fault] * times)

    def take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def reset(self) -> None:
        """Forget messages, pending failures, users and counts; restore default settings."""
        with self._lock:
            self._messages.clear()
            self._faults.clear()
            self._users.clear()
            self._opened = 0
        self.reset_settings()

    # --- Connections -----------------------------------------------------------------------

    @property
    def connections_opened(self) -> int:
        """Client connections accepted since the last reset (one per SMTP session)."""
        with self._lock:
            return self._opened

    def _count_connection(self) -> None:
        with self._lock:
            self._opened += 1

    # --- Clients ---------------------------------------------------------------------------

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    # --- Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        _AIOSMTPD_LOG.addFilter(_drop_login_data_warning)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="smtp-test-server", daemon=True
        )
        self._thread.start()
        self.starttls_port, self.smtps_port, self.plain_port = self._call(self._listen())

    def stop(self) -> None:
        _AIOSMTPD_LOG.removeFilter(_drop_login_data_warning)
        if self._thread is None:
            if not self._loop.is_running():
                self._loop.close()
            return
        try:
            self._call(self._shut_down())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout)
            # A loop still running in a stuck thread cannot be closed; the thread is a
            # daemon, so it at least cannot keep the test run alive.
            if not self._thread.is_alive():
                self._loop.close()
            self._thread = None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run coro on the server loop and wait for it, within the timeout."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    async def _listen(self) -> tuple[int, int, int]:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(self._certs.cert_path, self._certs.key_path)
        starttls = await self._serve("starttls", None, tls_context=server_tls)
        smtps = await self._serve("smtps", server_tls)
        plain = await self._serve("plain", None)
        return starttls, smtps, plain

    async def _serve(
        self, name: ListenerName, implicit_tls: ssl.SSLContext | None, **smtp_kwargs: Any
    ) -> int:
        # Binding port 0 ourselves lets the kernel pick a free port atomically: unlike
        # net.free_port() there is no window for another process to take it first.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        listener = _Listener(name, sock.getsockname()[1])

        def connection() -> _ConnectionSMTP:
            return self._connection(listener, smtp_kwargs)

        self._servers.append(
            await self._loop.create_server(connection, sock=sock, ssl=implicit_tls)
        )
        return listener.port

    def _connection(self, listener: _Listener, smtp_kwargs: dict[str, Any]) -> _ConnectionSMTP:
        # aiosmtpd only sees TLS it negotiated itself (STARTTLS), so it must not demand
        # TLS for AUTH on the implicit-TLS and plain listeners: it would refuse AUTH there.
        require_tls = self.auth_require_tls if listener.name == "starttls" else False
        smtp = _ConnectionSMTP(
            self._handler,
            listener,
            self,
            hostname=SERVER_HOSTNAME,
            authenticator=self._handler.authenticate,
            auth_require_tls=require_tls,
            auth_exclude_mechanism=self.auth_exclude,
            enable_SMTPUTF8=True,
            timeout=self._idle_timeout,
            loop=self._loop,
            **smtp_kwargs,
        )
        self._connections.add(smtp)
        return smtp

    async def _shut_down(self) -> None:
        for server in self._servers:
            server.close()
        # Abort rather than close: a graceful TLS shutdown waits on the client.
        for smtp in list(self._connections):
            if smtp.transport is not None:
                smtp.transport.abort()
        # Let connection_lost() callbacks cancel the session tasks before the loop stops.
        await asyncio.sleep(0.05)
        self._servers.clear()


def _check_stage(stage: Stage) -> Stage:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    return stage


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpTestServer]:
    """One SMTP server for the whole run. Tests should use `smtp`, which resets it."""
    server = SmtpTestServer(make_self_signed(tmp_path_factory.mktemp("smtp-tls")))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpTestServer) -> Iterator[SmtpTestServer]:
    """The session server with no messages, failures or users, and default settings."""
    smtp_server.reset()
    yield smtp_server
    smtp_server.reset()
