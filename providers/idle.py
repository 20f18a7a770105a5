"""IMAP IDLE for many channels on one thread: it says when to poll, it never fetches mail.

RFC 2177: after `IDLE` the server pushes untagged responses (`* n EXISTS`: new mail) until the
client sends `DONE`; a client re-issues IDLE well within the server's 30-minute inactivity
timeout (RFC 3501 5.4). Connecting (DNS, TCP, TLS, LOGIN, EXAMINE) blocks, so it runs in a small
thread pool; the idle sockets are all read by the one thread that runs the loop, with a parser
for the few responses that matter. Callbacks fire on that thread only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from providers.config import AnyCredentials, IncomingSettings, NetworkPolicy, TokenCredentials
from providers.errors import (
    AuthenticationFailed,
    ConnectionTimedOut,
    ProtocolError,
    ProviderError,
    server_said,
)
from providers.imap import imap_close, imap_detach, imap_open, mapped_errors, select_folder

logger = logging.getLogger(__name__)

NEW_MAIL = "new_mail"  # EXISTS grew: enqueue a poll
CONNECTED = "connected"  # IDLE runs (first IDLE of each connection)
UNSUPPORTED = "unsupported"  # no IDLE in CAPABILITY: keep polling; not retried until re-watched
ERROR = "error"  # connecting failed or the connection dropped; retried with backoff
GAVE_UP = "gave_up"  # GIVE_UP_AFTER failures in a row (or one permanent): poll; retries go on

CONNECT_WORKERS = 8
GIVE_UP_AFTER = 5
JITTER = 0.2  # ±20%: a server restart must not bring every channel back at the same instant
COALESCE = 0.2  # at most one new_mail per channel this often; a later one is delayed, not lost
STABLE_AFTER = 60.0  # a connection idling this long resets the failure count
LOGOUT_GRACE = 1.0  # how long close() waits for the servers to answer LOGOUT
STOP_CHECK = 0.25  # run() looks at its stop event this often
RECV_SIZE = 16 * 1024
MAX_READ_PER_PASS = 256 * 1024  # one chatty server must not hold the loop
MAX_RESPONSE = 256 * 1024  # an idle connection has no business sending more in one response
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")  # RFC 3501 4.3 (and RFC 7888's "{n+}")

# What a channel is doing; its `due` says when the loop must look at it again.
WAITING, CONNECTING, STARTING, IDLING, ENDING = (
    "waiting",
    "connecting",
    "starting",
    "idling",
    "ending",
)
CLOSING, PARKED, RETIRED = "closing", "parked", "retired"


@dataclass(frozen=True)
class IdleEvent:
    key: Hashable  # the caller's id for the channel
    kind: str  # NEW_MAIL, CONNECTED, UNSUPPORTED, ERROR or GAVE_UP
    detail: str = ""  # admin-readable text for ERROR and GAVE_UP
    permanent: bool = False  # the error will not pass without a configuration change


@dataclass(frozen=True)
class _Opened:
    """What the pool hands the loop: a logged-in connection with the folder EXAMINEd."""

    sock: socket.socket
    buffered: bytes
    exists: int
    mark: tuple[int, int]  # (UIDVALIDITY, UIDNEXT): changed between connections = new mail
    secret: str = ""  # what the login used, redacted from anything the server says


# Fresh credentials for each (re)connection, given the access token a server just refused (or
# ""); called in the pool. OAuth2 channels need it: the token in their settings would expire.
CredentialsSource = Callable[[str], AnyCredentials]
Wanted = tuple[IncomingSettings, NetworkPolicy, "CredentialsSource | None"]


class _Responses:
    """Splits the server's bytes into responses: lines ending in CRLF, where a line ending in
    "{n}" continues after n raw bytes (a literal, RFC 3501 4.3), which are never parsed."""

    __slots__ = ("_buf", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        responses = []
        while (end := self._buf.find(b"\r\n", self._scan)) >= 0:
            literal = _LITERAL.search(self._buf, self._scan, end)
            if literal:
                self._scan = end + 2 + int(literal.group(1))
                continue
            responses.append(bytes(self._buf[:end]))
            del self._buf[: end + 2]
            self._scan = 0
        if len(self._buf) > MAX_RESPONSE:
            raise ValueError("response too long")
        return responses


class _Channel:
    """One watched folder. Small on purpose: a process holds a thousand of them."""

    __slots__ = (
        "key", "settings", "policy", "credentials", "secret", "state", "due", "sock",
        "responses", "seq", "exists", "expunged", "mark", "failures", "gave_up", "idle_since",
        "mail_pending", "mail_at",
    )  # fmt: skip

    def __init__(
        self,
        key: Hashable,
        settings: IncomingSettings,
        policy: NetworkPolicy,
        credentials: CredentialsSource | None,
        now: float,
    ) -> None:
        self.key, self.settings, self.policy = key, settings, policy
        self.credentials, self.secret = credentials, settings.credentials.secret
        self.state, self.due = WAITING, now
        self.sock: socket.socket | None = None
        self.responses: _Responses | None = None
        self.seq = 0  # tags are P1, P2...: one per command on this connection
        self.exists, self.expunged = 0, False
        self.mark: tuple[int, int] | None = None
        self.failures, self.gave_up = 0, False
        self.idle_since: float | None = None
        self.mail_pending, self.mail_at = False, -math.inf

    @property
    def tag(self) -> bytes:
        return b"P%d" % self.seq

    @property
    def where(self) -> str:
        return f"{self.settings.server.host} port {self.settings.server.port}"


class IdleEngine:
    """Keeps one IDLE connection per watched channel and reports what happens as IdleEvents.

    watch(), unwatch() and watched() may be called from any thread; run_once(), run() and
    close() belong to the one thread that runs the loop, which is also where on_event is
    called (keep it quick: enqueue, don't poll).
    """

    def __init__(
        self,
        on_event: Callable[[IdleEvent], None],
        *,
        reissue_after: float = 540.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        connect_timeout: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_event = on_event
        self._reissue_after = reissue_after
        self._backoff_base, self._backoff_max = backoff_base, backoff_max
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pool = ThreadPoolExecutor(CONNECT_WORKERS, thread_name_prefix="imap-idle-connect")
        # Shared with other threads, under _lock: what the caller wants, and what is new.
        self._lock = threading.Lock()
        self._wanted: dict[Hashable, Wanted] = {}
        self._requests: dict[Hashable, tuple[IncomingSettings, NetworkPolicy] | None] = {}
        self._opened: list[tuple[_Channel, Future[_Opened | None]]] = []
        self._closed = False
        # The loop thread's own.
        self._channels: dict[Hashable, _Channel] = {}
        self._closing: set[_Channel] = set()
        self._backlog: set[_Channel] = set()  # may have bytes the selector cannot see

    # -- any thread --------------------------------------------------------------------------

    def watch(
        self,
        key: Hashable,
        settings: IncomingSettings,
        policy: NetworkPolicy,
        credentials: CredentialsSource | None = None,
    ) -> None:
        """Listen on this channel; the same settings again change nothing, others reconnect.
        With `credentials`, each connection logs in with what it returns, not with the
        settings' credentials (which then only name the account)."""
        if settings.protocol != "imap":
            raise ValueError(f"IDLE is IMAP only, not {settings.protocol!r}")
        self._request(key, (settings, policy, credentials))

    def unwatch(self, key: Hashable) -> None:
        self._request(key, None)

    def watched(self) -> set[Hashable]:
        with self._lock:
            return set(self._wanted)

    def _request(self, key: Hashable, wanted: Wanted | None) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the IDLE engine is closed")
            if wanted is None:
                self._wanted.pop(key, None)
            else:
                self._wanted[key] = wanted
            self._requests[key] = wanted
        self._wake()

    def _wake(self) -> None:
        # A full socketpair already holds a wake-up; nothing is lost by dropping this one.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _handoff(self, channel: _Channel, future: Future[_Opened | None]) -> None:
        """In a pool thread: pass the connection to the loop (or close it if the loop is gone)."""
        with self._lock:
            if not self._closed:
                self._opened.append((channel, future))
                self._wake()
                return
        _discard(future)

    # -- the loop thread ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.run_once(STOP_CHECK)
        finally:
            self.close()

    def run_once(self, timeout: float) -> None:
        self._apply_requests()
        now = self._clock()
        wait = 0.0 if self._backlog else max(0.0, min(timeout, self._fire_due(now) - now))
        ready = self._selector.select(wait)
        now = self._clock()
        for key, _events in ready:
            if key.data is None:
                self._drain_wake()
            else:
                self._on_readable(key.data, now)
        for channel in list(self._backlog):
            self._on_readable(channel, now)
        self._apply_requests()

    def close(self) -> None:
        """LOGOUT from every server (best effort, LOGOUT_GRACE at most), stop connecting."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._requests.clear()
            opened, self._opened = self._opened, []
        for _channel, future in opened:
            _discard(future)
        now = self._clock()
        for key in list(self._channels):
            self._retire(self._channels.pop(key), now)
        deadline = time.monotonic() + LOGOUT_GRACE
        while self._closing and time.monotonic() < deadline:
            self.run_once(STOP_CHECK)
        for channel in list(self._closing):
            self._drop(channel)
        # Connections still being opened are closed by _handoff once they are.
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _apply_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, {}
            opened, self._opened = self._opened, []
        now = self._clock()
        for key, wanted in requests.items():
            self._apply(key, wanted, now)
        for channel, future in opened:
            self._on_opened(channel, future, now)

    def _apply(self, key: Hashable, wanted: Wanted | None, now: float) -> None:
        current = self._channels.get(key)
        if current is not None and wanted and wanted[:2] == (current.settings, current.policy):
            current.credentials = wanted[2]  # used at the next connection
            return
        if current is not None:
            self._retire(self._channels.pop(key), now)
        if wanted is not None:
            self._channels[key] = _Channel(key, *wanted, now)

    def _fire_due(self, now: float) -> float:
        """Act on every channel whose time has come; returns when the next one's will."""
        next_due = math.inf
        for channel in [*self._channels.values(), *self._closing]:
            if channel.mail_pending and now >= channel.mail_at + COALESCE:
                self._mail(channel, now)
            if channel.due <= now:
                self._on_due(channel, now)
            next_due = min(next_due, channel.due)
            if channel.mail_pending:
                next_due = min(next_due, channel.mail_at + COALESCE)
        return next_due

    def _on_due(self, channel: _Channel, now: float) -> None:
        if channel.state == WAITING:
            self._connect(channel)
        elif channel.state == IDLING:
            # Re-issue (RFC 2177): DONE, wait for the tagged OK, then a new IDLE.
            if self._send(channel, b"DONE\r\n", now):
                channel.state, channel.due = ENDING, now + self._reply_timeout(channel)
        elif channel.state in (STARTING, ENDING):
            what = "IDLE" if channel.state == STARTING else "DONE"
            timeout = self._reply_timeout(channel)
            self._fail(
                channel,
                ConnectionTimedOut(f"{channel.where} did not answer {what} within {timeout:g} s."),
                now,
            )
        elif channel.state == CLOSING:
            self._drop(channel)

    # -- connecting --------------------------------------------------------------------------

    def _connect(self, channel: _Channel) -> None:
        channel.state, channel.due = CONNECTING, math.inf
        future = self._pool.submit(
            _open,
            channel.settings,
            channel.policy,
            self._reply_timeout(channel),
            channel.credentials,
        )
        future.add_done_callback(functools.partial(self._handoff, channel))

    def _on_opened(self, channel: _Channel, future: Future[_Opened | None], now: float) -> None:
        if channel.state != CONNECTING:  # unwatched or replaced meanwhile
            _discard(future)
            return
        try:
            opened = future.result()
        except ProviderError as error:
            self._fail(channel, error, now)
            return
        except Exception as exc:  # a bug, not the server: still retry, but say so in the log
            logger.exception("opening IDLE connection to %s failed", channel.where)
            self._fail(channel, ProtocolError(f"Listening on {channel.where} failed: {exc}"), now)
            return
        if opened is None:
            channel.state, channel.due = PARKED, math.inf
            self._emit(channel, UNSUPPORTED, f"{channel.where} does not offer IMAP IDLE.")
            return
        self._start(channel, opened, now)

    def _start(self, channel: _Channel, opened: _Opened, now: float) -> None:
        # Mail that came while no connection listened would otherwise wait for the next poll.
        missed = channel.mark is not None and opened.mark != channel.mark
        channel.sock, channel.responses = opened.sock, _Responses()
        channel.secret = opened.secret or channel.secret
        channel.mark, channel.exists, channel.expunged = opened.mark, opened.exists, False
        self._selector.register(opened.sock, selectors.EVENT_READ, channel)
        if missed:
            self._mail(channel, now)
        self._handle(channel, channel.responses.feed(opened.buffered), now)
        if channel.sock is not None:
            self._send_idle(channel, now)
            # TLS may already hold decrypted bytes, which would never wake the selector.
            self._backlog.add(channel)

    def _send_idle(self, channel: _Channel, now: float) -> None:
        channel.seq += 1
        if self._send(channel, b"%s IDLE\r\n" % channel.tag, now):
            channel.state, channel.due = STARTING, now + self._reply_timeout(channel)

    def _reply_timeout(self, channel: _Channel) -> float:
        return min(channel.settings.server.timeout, self._connect_timeout)

    # -- reading -----------------------------------------------------------------------------

    def _on_readable(self, channel: _Channel, now: float) -> None:
        self._backlog.discard(channel)
        if channel.sock is None or channel.responses is None:
            return
        try:
            data, eof, more = _receive(channel.sock)
            responses = channel.responses.feed(data)
        except OSError as exc:
            self._lost(channel, _broke(channel, exc), now)
            return
        except ValueError:
            kib = MAX_RESPONSE // 1024
            self._lost(channel, ProtocolError(f"{channel.where} sent over {kib} KiB at once."), now)
            return
        self._handle(channel, responses, now)
        if eof and channel.sock is not None:
            error = ProtocolError(f"{channel.where} closed the IMAP connection.")
            self._lost(channel, error, now)
        elif more:
            self._backlog.add(channel)

    def _handle(self, channel: _Channel, responses: list[bytes], now: float) -> None:
        for response in responses:
            if channel.sock is None:
                return
            if response.startswith(b"+"):
                if channel.state == STARTING:
                    self._idling(channel, now)
            elif response.startswith(b"* "):
                self._untagged(channel, response[2:], now)
            elif response.partition(b" ")[0] == channel.tag:
                self._tagged(channel, response.partition(b" ")[2], now)

    def _idling(self, channel: _Channel, now: float) -> None:
        channel.state, channel.due = IDLING, now + self._reissue_after
        if channel.idle_since is None:
            channel.idle_since = now
            self._emit(channel, CONNECTED)

    def _untagged(self, channel: _Channel, text: bytes, now: float) -> None:
        first, _, rest = text.partition(b" ")
        if first.upper() == b"BYE":
            if channel.state != CLOSING:  # expected after our LOGOUT
                said = server_said(rest, channel.secret)
                message = f"{channel.where} closed the IMAP connection (server said: {said})."
                self._fail(channel, ProtocolError(message), now)
            return
        name = rest.split(b" ", 1)[0].upper()
        if not first.isdigit():
            return
        if name == b"EXISTS":
            self._exists(channel, int(first), now)
        elif name == b"EXPUNGE":
            # RFC 3501 7.4.1: each EXPUNGE shrinks the folder by one.
            channel.exists, channel.expunged = max(0, channel.exists - 1), True

    def _exists(self, channel: _Channel, exists: int, now: float) -> None:
        # RFC 3501 7.3.1: EXISTS is the new size. After an EXPUNGE a same-sized EXISTS may hide
        # an arrival, so it counts too: a needless poll is cheap, a missed one is not.
        grew = exists > channel.exists or channel.expunged
        channel.exists, channel.expunged = exists, False
        if grew and channel.state != CLOSING:
            self._mail(channel, now)

    def _tagged(self, channel: _Channel, text: bytes, now: float) -> None:
        status, _, said = text.partition(b" ")
        if channel.state == CLOSING:  # the answer to LOGOUT
            self._drop(channel)
        elif status.upper() == b"OK":
            # The IDLE ended: after our DONE (re-issue) or because the server chose to.
            self._send_idle(channel, now)
        else:
            said_text = server_said(said, channel.secret)
            error = ProtocolError(f"{channel.where} refused IDLE (server said: {said_text}).")
            self._fail(channel, error, now)

    def _mail(self, channel: _Channel, now: float) -> None:
        if now - channel.mail_at < COALESCE:
            channel.mail_pending = True  # _fire_due sends it when the interval is over
            return
        channel.mail_pending, channel.mail_at = False, now
        self._emit(channel, NEW_MAIL)

    # -- failing and closing -----------------------------------------------------------------

    def _send(self, channel: _Channel, data: bytes, now: float) -> bool:
        try:
            _send_all(channel.sock, data, self._reply_timeout(channel))
        except OSError as exc:
            self._lost(channel, _broke(channel, exc), now)
            return False
        return True

    def _lost(self, channel: _Channel, error: ProviderError, now: float) -> None:
        if channel.state == CLOSING:
            self._drop(channel)
        else:
            self._fail(channel, error, now)

    def _fail(self, channel: _Channel, error: ProviderError, now: float) -> None:
        self._close_socket(channel)
        if channel.idle_since is not None and now - channel.idle_since >= STABLE_AFTER:
            channel.failures, channel.gave_up = 0, False
        channel.idle_since = None
        # A refused password stays refused: give up at once rather than risk a lockout.
        channel.failures = max(channel.failures + 1, GIVE_UP_AFTER if error.permanent else 0)
        channel.state, channel.due = WAITING, now + self._backoff(channel.failures)
        logger.info("IDLE on %s failed (%d in a row): %s", channel.where, channel.failures, error)
        self._emit(channel, ERROR, error.message, error.permanent)
        if channel.failures >= GIVE_UP_AFTER and not channel.gave_up:
            channel.gave_up = True
            self._emit(channel, GAVE_UP, error.message, error.permanent)

    def _backoff(self, failures: int) -> float:
        delay = self._backoff_base * 2 ** min(failures - 1, 32)
        if failures >= GIVE_UP_AFTER:
            delay = self._backoff_max
        return min(delay, self._backoff_max) * random.uniform(1 - JITTER, 1 + JITTER)

    def _retire(self, channel: _Channel, now: float) -> None:
        """Stop listening: LOGOUT (RFC 3501 6.1.3), ending the IDLE first if one runs."""
        self._backlog.discard(channel)
        if channel.sock is None:
            channel.state = RETIRED  # a connection still being opened is closed on arrival
            return
        goodbye = b"DONE\r\n" if channel.state in (STARTING, IDLING) else b""
        channel.seq += 1
        channel.state, channel.due = CLOSING, now + LOGOUT_GRACE
        self._closing.add(channel)
        self._send(channel, goodbye + b"%s LOGOUT\r\n" % channel.tag, now)

    def _drop(self, channel: _Channel) -> None:
        self._close_socket(channel)
        self._closing.discard(channel)
        channel.state, channel.due = RETIRED, math.inf

    def _close_socket(self, channel: _Channel) -> None:
        self._backlog.discard(channel)
        if channel.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(channel.sock)
            with contextlib.suppress(OSError):
                channel.sock.close()
        channel.sock, channel.responses = None, None

    def _emit(
        self, channel: _Channel, kind: str, detail: str = "", permanent: bool = False
    ) -> None:
        try:
            self._on_event(IdleEvent(channel.key, kind, detail, permanent))
        except Exception:
            logger.exception("IDLE event handler failed on %s for %r", kind, channel.key)


# -- the pool's side and socket helpers -------------------------------------------------------


def _open(
    settings: IncomingSettings,
    policy: NetworkPolicy,
    timeout: float,
    credentials: CredentialsSource | None = None,
) -> _Opened | None:
    """Connect, log in, check for IDLE, EXAMINE (read-only: \\Recent stays as it is).

    Blocking; runs in the pool. None when the server does not announce IDLE (RFC 2177 3).
    """
    server = replace(settings.server, timeout=timeout)
    settings = replace(settings, server=server)
    client, settings = _login(settings, policy, credentials)
    try:
        with mapped_errors(server, settings.credentials):
            if not client.has_capability("IDLE"):
                imap_close(client)
                return None
            status = select_folder(client, settings.folder, readonly=True)
            sock, buffered = imap_detach(client)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    exists = int(status.get(b"EXISTS", 0))
    # Without UIDNEXT, the message count stands in (a change then may be only a deletion).
    mark = (int(status.get(b"UIDVALIDITY", 0)), int(status.get(b"UIDNEXT", exists)))
    return _Opened(sock, buffered, exists, mark, settings.credentials.secret)


def _login(
    settings: IncomingSettings, policy: NetworkPolicy, credentials: CredentialsSource | None
):
    """Log in with the source's credentials; a refused access token (ended early by the
    provider) is refreshed once, as polls do."""
    if credentials is None:
        return imap_open(settings, policy), settings
    settings = replace(settings, credentials=credentials(""))
    try:
        return imap_open(settings, policy), settings
    except AuthenticationFailed:
        if not isinstance(settings.credentials, TokenCredentials):
            raise
    settings = replace(settings, credentials=credentials(settings.credentials.access_token))
    return imap_open(settings, policy), settings


def _broke(channel: _Channel, exc: OSError) -> ProtocolError:
    return ProtocolError(f"The IMAP connection to {channel.where} broke ({exc}).")


def _discard(future: Future[_Opened | None]) -> None:
    """Close a connection nobody wants any more (unwatched while it was being opened)."""
    with contextlib.suppress(Exception):
        opened = future.result()
        if opened is not None:
            with contextlib.suppress(OSError):
                opened.sock.send(b"P1 LOGOUT\r\n")
            opened.sock.close()


def _receive(sock: socket.socket) -> tuple[bytes, bool, bool]:
    """What the socket has now: (data, end of stream, more may be waiting)."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_READ_PER_PASS:
        try:
            # On TLS, a recv also returns what OpenSSL already decrypted (pending()), so
            # reading until it would block leaves nothing behind that select cannot see.
            chunk = sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return b"".join(chunks), False, False
        if not chunk:
            return b"".join(chunks), True, False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False, True


def _send_all(sock: socket.socket | None, data: bytes, timeout: float) -> None:
    if sock is None:
        raise ConnectionResetError("not connected")
    # A few bytes to an idle connection: blocking (with a timeout) only if the peer is stuck,
    # which is simpler than queueing them for a writable event that never comes in practice.
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)
