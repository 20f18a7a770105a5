"""POP3 over a socket netguard checked, on poplib."""

from __future__ import annotations

import base64
import contextlib
import poplib
import socket
import ssl
from collections.abc import Iterator

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
    ProtocolError,
    ProviderError,
    TLSFailed,
    auth_refused,
    server_said,
    token_refused,
)

# poplib refuses lines over 2,048 bytes ("line too long"), but real mail has longer ones
# (unfolded headers, base64 or HTML without line breaks) and RETR must still read them.
# It is a module global, so it is raised here, once, for the whole process.
poplib._MAXLINE = 1024 * 1024


class GuardedPOP3(poplib.POP3):
    """poplib.POP3 whose socket comes from netguard; wrapped here for implicit TLS."""

    def __init__(self, server: ServerAddress, policy: NetworkPolicy) -> None:
        self._server = server
        self._policy = policy
        self.sock: socket.socket | None = None  # so close() works before poplib sets them
        self.file = None
        try:
            super().__init__(server.host, server.port, timeout=server.timeout)
        except TimeoutError as exc:
            self.close()
            raise tls.no_greeting(server, "POP3") from exc
        except BaseException:
            # Unlike imaplib, poplib leaves the socket open when the greeting fails.
            self.close()
            raise

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = netguard.connect(self._server, self._policy)
        if self._server.security != "ssl":
            return sock
        return tls.wrap(sock, self._server)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()

    @property
    def server(self) -> ServerAddress:
        return self._server


@contextlib.contextmanager
def pop3_connect(settings: IncomingSettings, policy: NetworkPolicy) -> Iterator[poplib.POP3]:
    """A logged-in (TRANSACTION state) client; errors inside the block become ProviderErrors.

    Leaving the block normally sends QUIT, which is when the server applies DELEs (RFC 1939).
    """
    server = settings.server
    with mapped_errors(server, settings.credentials):
        client = GuardedPOP3(server, policy)
        try:
            if server.security == "starttls":
                _stls(client, server)
            login(client, server, settings.credentials)
            yield client
        except BaseException:
            client.close()  # no QUIT: nothing marked for deletion is deleted
            raise
        _quit(client)


def pop3_check(settings: IncomingSettings, policy: NetworkPolicy) -> MailboxCheck:
    with pop3_connect(settings, policy) as client:
        count, _size = client.stat()
    return MailboxCheck(message_count=count)


def login(client: poplib.POP3, server: ServerAddress, credentials: AnyCredentials) -> None:
    """USER/PASS, or AUTH OAUTHBEARER / XOAUTH2 (RFC 5034 SASL) with an access token."""
    if isinstance(credentials, TokenCredentials):
        _token_login(client, server, credentials)
        return
    try:
        client.user(credentials.username)
        client.pass_(credentials.password)
    except poplib.error_proto as exc:
        raise auth_refused(server.host, _reply(exc), credentials.password) from exc


def _token_login(client: poplib.POP3, server: ServerAddress, credentials: TokenCredentials) -> None:
    """AUTH with the mechanism CAPA's SASL line allows, answering the server's "+ "
    continuation by hand (poplib has no AUTH).

    A refused token comes back as one more continuation carrying a JSON error; the client
    answers it (sasl.error_answer) and the server then says -ERR.
    """
    token = credentials.access_token
    try:
        mechanism = sasl.token_mechanism(_sasl_offered(client))
        if mechanism is None:
            raise sasl.not_offered(server, "its POP3 CAPA SASL line")
        client._putcmd(f"AUTH {mechanism}")
        _continuation(client._getresp(), server, mechanism)
        client._putcmd(_b64(sasl.initial_response(mechanism, credentials, server)))
        reply = client._getresp()
        if not reply.startswith(b"+OK"):
            client._putcmd(_b64(sasl.error_answer(mechanism)))
            reply = client._getresp()  # -ERR: raises error_proto
    except poplib.error_proto as exc:
        raise token_refused(server.host, _reply(exc), token) from exc


def _sasl_offered(client: poplib.POP3) -> list[str]:
    try:
        return client.capa().get("SASL", [])
    except poplib.error_proto:  # no CAPA (RFC 2449): no SASL either
        return []


def _continuation(reply: bytes, server: ServerAddress, mechanism: str) -> None:
    if not reply.startswith(b"+") or reply.startswith(b"+OK"):
        said = server_said(reply)
        raise ProtocolError(
            f"{server.host} answered AUTH {mechanism} unexpectedly (server said: {said})."
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@contextlib.contextmanager
def mapped_errors(server: ServerAddress, credentials: AnyCredentials) -> Iterator[None]:
    """poplib's, ssl's and socket's exceptions as ProviderErrors naming the server."""
    where = f"{server.host} port {server.port}"
    try:
        yield
    except ProviderError:
        raise
    except ssl.SSLError as exc:
        raise tls.tls_error(exc, server) from exc
    except poplib.error_proto as exc:
        said = _reply(exc, credentials.secret)
        raise ProtocolError(f"{server.host} answered unexpectedly (server said: {said}).") from exc
    except TimeoutError as exc:
        raise ConnectionTimedOut(
            f"{where} stopped answering (nothing within {server.timeout:g} s)."
        ) from exc
    except OSError as exc:
        raise ProtocolError(f"The POP3 connection to {where} broke ({exc}).") from exc


def _stls(client: poplib.POP3, server: ServerAddress) -> None:
    # Servers without CAPA (RFC 2449) answer -ERR to it; they have no STLS either.
    try:
        capabilities = client.capa()
    except poplib.error_proto:
        capabilities = {}
    if "STLS" not in capabilities:
        raise TLSFailed(
            f"{server.host} port {server.port} does not offer STARTTLS (STLS): choose SSL/TLS "
            "(usually port 995) or, only on a network you trust, no security."
        )
    client.stls(tls.client_context(server))


def _quit(client: poplib.POP3) -> None:
    if client.sock is None:
        return  # already quit (Pop3Maildrop.quit) or closed
    # Not swallowed: -ERR or silence at QUIT may mean the DELEs were not applied.
    try:
        client.quit()
    except BaseException:
        client.close()
        raise


def _reply(exc: poplib.error_proto, *secrets: str) -> str:
    reply = exc.args[0] if exc.args else ""
    return server_said(reply, *secrets)
