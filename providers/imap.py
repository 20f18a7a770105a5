"""IMAP over a socket netguard checked, on imapclient."""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from providers import netguard, sasl, tls
from providers.config import (
    AnyCredentials,
    IncomingSettings,
    MailboxCheck,
    NetworkPolicy,
    ServerAddress,
    TokenCredentials,
)
from providers.errors import (
    ConnectionTimedOut,
    FolderMissing,
    ProtocolError,
    ProviderError,
    TLSFailed,
    auth_refused,
    server_said,
    token_refused,
)

logger = logging.getLogger(__name__)


class _GuardedIMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 whose socket comes from netguard; wrapped here for implicit TLS."""

    def __init__(self, server: ServerAddress, policy: NetworkPolicy) -> None:
        self._server = server
        self._policy = policy
        try:
            super().__init__(server.host, server.port, timeout=server.timeout)
        except TimeoutError as exc:
            raise tls.no_greeting(server, "IMAP") from exc

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = netguard.connect(self._server, self._policy)
        if self._server.security != "ssl":
            return sock
        return tls.wrap(sock, self._server)


class GuardedIMAPClient(IMAPClient):
    """IMAPClient on a _GuardedIMAP4 (IMAPClient builds its imaplib object in _create_IMAP4)."""

    def __init__(self, server: ServerAddress, policy: NetworkPolicy) -> None:
        self._server = server
        self._policy = policy
        super().__init__(
            server.host, port=server.port, ssl=server.security == "ssl", timeout=server.timeout
        )

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return _GuardedIMAP4(self._server, self._policy)

    @property
    def server(self) -> ServerAddress:
        return self._server


@contextlib.contextmanager
def imap_connect(settings: IncomingSettings, policy: NetworkPolicy) -> Iterator[IMAPClient]:
    """A logged-in client; errors inside the block come out as ProviderErrors too."""
    client = imap_open(settings, policy)
    with mapped_errors(settings.server, settings.credentials):
        try:
            yield client
        except BaseException:
            # The connection may be what failed: do not wait for a LOGOUT reply on it.
            _shutdown(client)
            raise
        _logout(client)


def imap_open(settings: IncomingSettings, policy: NetworkPolicy) -> IMAPClient:
    """A logged-in client for a connection that outlives a block (the IDLE listener keeps it
    and takes its socket over); the caller ends it with imap_close. Errors are ProviderErrors."""
    server = settings.server
    with mapped_errors(server, settings.credentials):
        client = GuardedIMAPClient(server, policy)
        try:
            if server.security == "starttls":
                _starttls(client, server)
            login(client, settings.credentials)
        except BaseException:
            _shutdown(client)
            raise
    return client


def imap_close(client: IMAPClient) -> None:
    """LOGOUT, or just close if the connection is already gone; never raises."""
    _logout(client)


def imap_detach(client: IMAPClient) -> tuple[socket.socket, bytes]:
    """Take a logged-in connection over from imaplib: its socket, now non-blocking, and the
    bytes imaplib's reader had already buffered past the last response it parsed.

    The client must not be used afterwards; closing the socket ends the connection.
    """
    imap = client._imap
    sock, reader = imap.sock, imap.file
    sock.setblocking(False)
    try:
        # What the reader holds; only if it holds nothing, one non-blocking read.
        buffered = reader.peek()
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        buffered = b""
    reader.close()  # drops imaplib's reference; the socket stays open
    return sock, bytes(buffered)


def imap_check(settings: IncomingSettings, policy: NetworkPolicy) -> MailboxCheck:
    """Log in and look at the folder without changing it (EXAMINE leaves \\Recent alone)."""
    with imap_connect(settings, policy) as client:
        status = select_folder(client, settings.folder, readonly=True)
    return MailboxCheck(
        message_count=int(status.get(b"EXISTS", 0)),
        uidvalidity=_optional_int(status.get(b"UIDVALIDITY")),
        uidnext=_optional_int(status.get(b"UIDNEXT")),
    )


def login(client: IMAPClient, credentials: AnyCredentials) -> None:
    """Password login, or SASL OAUTHBEARER / XOAUTH2 with an access token."""
    username, secret = credentials.username, credentials.secret
    try:
        if isinstance(credentials, TokenCredentials):
            _token_login(client, credentials)
        elif username.isascii() and secret.isascii():
            client.login(username, secret)
        else:
            # LOGIN's strings are ASCII-only in imaplib; AUTHENTICATE PLAIN carries UTF-8.
            client.plain_login(username, secret)
    except LoginError as exc:
        # imapclient turns every failure during LOGIN into LoginError; a connection that broke
        # is not a refused password, and must not read as one (nor count as permanent).
        if isinstance(exc.__context__, imaplib.IMAP4.abort | OSError):
            raise ProtocolError(
                f"The connection to {client.host} broke during sign-in; Postroom will retry."
            ) from exc
        if isinstance(credentials, TokenCredentials):
            raise token_refused(client.host, _reply(exc), secret) from exc
        raise auth_refused(client.host, _reply(exc), secret) from exc


def _token_login(client: GuardedIMAPClient, credentials: TokenCredentials) -> None:
    """AUTHENTICATE with the mechanism the server's AUTH= capabilities allow.

    Not imapclient's oauth2_login / oauthbearer_login: they answer the server's error
    challenge with the token again, where the SASL profiles want %x01 or an empty response.
    """
    server = client.server
    offered = [m for m in sasl.TOKEN_MECHANISMS if client.has_capability(f"AUTH={m}")]
    mechanism = sasl.token_mechanism(offered)
    if mechanism is None:
        raise sasl.not_offered(server, "its IMAP CAPABILITY")
    answers = iter([sasl.initial_response(mechanism, credentials, server)])

    def respond(_challenge: bytes) -> bytes:
        return next(answers, sasl.error_answer(mechanism))

    try:
        client._imap.authenticate(mechanism, respond)
    except imaplib.IMAP4.error as exc:  # NO or BAD; abort (a broken connection) too
        raise LoginError(f"authenticate failed: {exc}") from exc


def select_folder(client: IMAPClient, folder: str, *, readonly: bool) -> dict[bytes, Any]:
    try:
        return client.select_folder(folder, readonly=readonly)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        raise FolderMissing(
            f"Folder '{folder}' does not exist on the server (server said: {_reply(exc)}): "
            "check the mailbox folder name."
        ) from exc


@contextlib.contextmanager
def mapped_errors(server: ServerAddress, credentials: AnyCredentials) -> Iterator[None]:
    """imaplib's, ssl's and socket's exceptions as ProviderErrors naming the server."""
    where = f"{server.host} port {server.port}"
    try:
        yield
    except ProviderError:
        raise
    except ssl.SSLError as exc:
        raise tls.tls_error(exc, server) from exc
    except imaplib.IMAP4.abort as exc:
        said = server_said(str(exc), credentials.secret)
        raise ProtocolError(f"The IMAP connection to {where} broke ({said}).") from exc
    except imaplib.IMAP4.error as exc:
        said = _reply(exc, credentials.secret)
        raise ProtocolError(f"{server.host} answered unexpectedly (server said: {said}).") from exc
    except TimeoutError as exc:
        raise ConnectionTimedOut(
            f"{where} stopped answering (nothing within {server.timeout:g} s)."
        ) from exc
    except OSError as exc:
        raise ProtocolError(f"The IMAP connection to {where} broke ({exc}).") from exc


def _starttls(client: IMAPClient, server: ServerAddress) -> None:
    if not client.has_capability("STARTTLS"):
        raise TLSFailed(
            f"{server.host} port {server.port} does not offer STARTTLS: choose SSL/TLS (usually "
            "port 993) or, only on a network you trust, no security."
        )
    client.starttls(tls.client_context(server))


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError) as exc:
        # The work is done; a server that hangs up without BYE does not undo it.
        logger.debug("IMAP logout from %s failed: %s", client.host, exc)
        _shutdown(client)


def _shutdown(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


def _reply(exc: Exception, *secrets: str) -> str:
    # imapclient words failures as "<command> failed: <server text>".
    return server_said(str(exc).split(" failed: ", 1)[-1], *secrets)


def _optional_int(value: Any) -> int | None:
    return int(value) if value is not None else None
