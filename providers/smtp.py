"""SMTP submission over a socket netguard checked, on aiosmtplib.

aiosmtplib takes the connected socket (`sock=`) and the host name (`hostname=`) separately,
so TLS verifies the certificate against the name the administrator typed while the bytes go
to the address netguard allowed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

import aiosmtplib
from aiosmtplib import SMTPStatus

from providers import netguard, sasl, tls
from providers.config import (
    AnyCredentials,
    NetworkPolicy,
    ServerAddress,
    SmtpSettings,
    TokenCredentials,
)
from providers.errors import (
    AuthenticationFailed,
    ConnectionTimedOut,
    ProtocolError,
    ProviderError,
    TLSFailed,
    auth_refused,
    server_said,
    token_refused,
)

logger = logging.getLogger(__name__)


class _SMTP(aiosmtplib.SMTP):
    """aiosmtplib.SMTP that drops the connection at once when it closes.

    close() would start a TLS shutdown that waits for the server's close_notify; when
    smtp_check's event loop ends first, the socket leaks. After QUIT (or a failure) there
    is nothing left to protect, so abort.
    """

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        super().close()


def smtp_check(settings: SmtpSettings, policy: NetworkPolicy) -> None:
    """Connect, EHLO, TLS as configured, AUTH if there are credentials, QUIT.

    Synchronous for Django views and Celery tasks; do not call it from a running event loop.
    """
    asyncio.run(_check(settings, policy))


async def _check(settings: SmtpSettings, policy: NetworkPolicy) -> None:
    async with smtp_connect(settings, policy):
        pass


@contextlib.asynccontextmanager
async def smtp_connect(
    settings: SmtpSettings, policy: NetworkPolicy
) -> AsyncIterator[aiosmtplib.SMTP]:
    """A client ready for MAIL FROM; errors inside the block come out as ProviderErrors too."""
    server = settings.server
    secrets = (settings.credentials.secret,) if settings.credentials else ()
    async with mapped_errors(server, *secrets):
        client = await _open(server, policy)
        try:
            await client.ehlo()
            if server.security == "starttls":
                await _starttls(client, server)
            if settings.credentials is not None:
                await login(client, server, settings.credentials)
            yield client
        except BaseException:
            client.close()
            raise
        await _quit(client)


async def login(
    client: aiosmtplib.SMTP, server: ServerAddress, credentials: AnyCredentials
) -> None:
    """AUTH with what aiosmtplib picks (PLAIN, LOGIN...), or OAUTHBEARER / XOAUTH2 for an
    access token."""
    if not client.supports_extension("auth"):
        raise _no_auth(client, server)
    if isinstance(credentials, TokenCredentials):
        await _token_login(client, server, credentials)
        return
    try:
        await client.login(credentials.username, credentials.password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise _refused(exc, server, credentials.password) from exc


async def _token_login(
    client: aiosmtplib.SMTP, server: ServerAddress, credentials: TokenCredentials
) -> None:
    """AUTH with the mechanism EHLO's AUTH line allows (RFC 4954), the token in the initial
    response; a 334 error challenge is answered as the mechanism says, then 535 follows."""
    mechanism = sasl.token_mechanism(client.server_auth_methods)
    if mechanism is None:
        raise sasl.not_offered(server, "its EHLO AUTH line")
    first = base64.b64encode(sasl.initial_response(mechanism, credentials, server))
    response = await client.execute_command(b"AUTH", mechanism.encode(), first)
    if response.code == SMTPStatus.auth_continue:
        answer = base64.b64encode(sasl.error_answer(mechanism))
        response = await client.execute_command(answer)
    if response.code != SMTPStatus.auth_successful:
        reply = f"{response.code} {response.message}"
        token = credentials.access_token
        raise token_refused(server.host, reply, token, permanent=response.code >= 500)


@contextlib.asynccontextmanager
async def mapped_errors(server: ServerAddress, *secrets: str) -> AsyncIterator[None]:
    """aiosmtplib's, ssl's and socket's exceptions as ProviderErrors naming the server."""
    try:
        yield
    except ProviderError:
        raise
    except aiosmtplib.SMTPException as exc:
        raise _smtp_error(exc, server, secrets) from exc
    except ssl.SSLError as exc:
        raise tls.tls_error(exc, server) from exc
    except TimeoutError as exc:
        raise ConnectionTimedOut(
            f"{server.host} port {server.port} stopped answering "
            f"(nothing within {server.timeout:g} s)."
        ) from exc
    except OSError as exc:
        raise _broke(server, exc) from exc


async def _open(server: ServerAddress, policy: NetworkPolicy) -> aiosmtplib.SMTP:
    sock = await asyncio.to_thread(netguard.connect, server, policy)
    client = _SMTP(
        hostname=server.host,  # for SNI and the certificate check only: we bring the socket
        sock=sock,
        use_tls=server.security == "ssl",
        # Never let aiosmtplib decide: "none" must stay plain, "starttls" is required below.
        start_tls=False,
        tls_context=tls.client_context(server),
        timeout=server.timeout,
    )
    try:
        await client.connect()
    except aiosmtplib.SMTPTimeoutError as exc:
        sock.close()
        if server.security == "ssl":
            raise ConnectionTimedOut(
                f"{server.host} port {server.port} did not complete a TLS handshake and "
                f"greeting within {server.timeout:g} s: check the port and the security setting."
            ) from exc
        raise tls.no_greeting(server, "SMTP") from exc
    except BaseException:
        sock.close()
        raise
    return client


async def _starttls(client: aiosmtplib.SMTP, server: ServerAddress) -> None:
    if not client.supports_extension("starttls"):
        raise TLSFailed(
            f"{server.host} port {server.port} does not offer STARTTLS: choose SSL/TLS (usually "
            "port 465) or, only on a network you trust, no security."
        )
    await client.starttls()
    # RFC 3207 4.2: what the server said before TLS is void; ask again (AUTH is often new).
    await client.ehlo()


async def _quit(client: aiosmtplib.SMTP) -> None:
    # Mail is accepted at the end of DATA; a failed QUIT takes nothing back.
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError) as exc:
        logger.debug("SMTP QUIT to %s failed: %s", client.hostname, exc)
        client.close()


def _no_auth(client: aiosmtplib.SMTP, server: ServerAddress) -> AuthenticationFailed:
    where = f"{server.host} port {server.port}"
    if client.get_transport_info("sslcontext") is None:
        return AuthenticationFailed(
            f"{where} offers no login (AUTH) on an unencrypted connection: choose STARTTLS or "
            "SSL/TLS."
        )
    return AuthenticationFailed(
        f"{where} offers no login (AUTH): check the port, or leave the SMTP password empty if "
        "this server takes mail without one."
    )


def _refused(
    exc: aiosmtplib.SMTPResponseException, server: ServerAddress, password: str
) -> AuthenticationFailed:
    # 454 is "temporary authentication failure" (RFC 4954): worth retrying as is.
    reply = f"{exc.code} {exc.message}"
    return auth_refused(server.host, reply, password, permanent=exc.code >= 500)


def _smtp_error(
    exc: aiosmtplib.SMTPException, server: ServerAddress, secrets: tuple[str, ...]
) -> ProviderError:
    cause = _ssl_cause(exc)
    if cause is not None:
        return tls.tls_error(cause, server)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _refused(exc, server, secrets[0] if secrets else "")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return ConnectionTimedOut(
            f"{server.host} port {server.port} stopped answering "
            f"(nothing within {server.timeout:g} s)."
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # Addresses stay out: this sentence is logged and shown on the channel.
        said = "; ".join(server_said(f"{r.code} {r.message}", *secrets) for r in exc.recipients)
        permanent = all(r.code >= 500 for r in exc.recipients)
        return ProtocolError(
            f"{server.host} refused the recipients (server said: {said}).", permanent=permanent
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        said = server_said(f"{exc.code} {exc.message}", *secrets)
        return ProtocolError(
            f"{server.host} answered unexpectedly (server said: {said}).", permanent=exc.code >= 500
        )
    if isinstance(exc, ConnectionError):  # SMTPServerDisconnected, SMTPConnectError
        return _broke(server, exc)
    return ProtocolError(f"SMTP with {server.host} failed ({server_said(str(exc), *secrets)}).")


def _broke(server: ServerAddress, exc: BaseException) -> ProtocolError:
    return ProtocolError(f"The SMTP connection to {server.host} port {server.port} broke ({exc}).")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """aiosmtplib wraps handshake failures in SMTPConnectError; find the ssl error inside."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
