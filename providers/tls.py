"""TLS client contexts and what a failed handshake means to an administrator."""

from __future__ import annotations

import functools
import os
import socket
import ssl

from providers.config import ServerAddress
from providers.errors import CertificateUntrusted, ConnectionTimedOut, ProviderError, TLSFailed

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: the certificate is valid, for another name.
_HOSTNAME_MISMATCH = 62


def client_context(server: ServerAddress) -> ssl.SSLContext:
    """Verify as a browser would, unless the administrator trusts a self-signed certificate.

    Shared by every connection of its kind, and not to be changed: a context holds its own
    parsed copy of the system's CA certificates, most of a megabyte, which the IDLE listener's
    thousand connections would otherwise hold a thousand times.
    """
    # OpenSSL reads SSL_CERT_FILE and SSL_CERT_DIR as a context loads its roots: part of the key.
    where = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return _shared_context(server.trust_self_signed, where)


@functools.lru_cache(maxsize=8)
def _shared_context(
    trust_self_signed: bool, where: tuple[str | None, str | None]
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if trust_self_signed:
        # Still encrypted, but anyone on the path could impersonate the server: the
        # administrator opted in for a server they run themselves.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def wrap(sock: socket.socket, server: ServerAddress) -> ssl.SSLSocket:
    """Implicit TLS on a connected socket; verified against the host NAME, not the IP.

    The socket is closed if the handshake fails.
    """
    try:
        return client_context(server).wrap_socket(sock, server_hostname=server.host)
    except TimeoutError as exc:
        sock.close()
        raise ConnectionTimedOut(
            f"{server.host} port {server.port} did not complete a TLS handshake within "
            f"{server.timeout:g} s: check the port and the security setting."
        ) from exc
    except BaseException:
        sock.close()
        raise


def tls_error(exc: ssl.SSLError, server: ServerAddress) -> ProviderError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted(exc, server)
    reason = exc.reason or exc.strerror or str(exc)
    return TLSFailed(
        f"TLS with {server.host} port {server.port} failed ({_readable(reason)}): check that "
        "the security setting (SSL/TLS or STARTTLS) is the one this port expects."
    )


def no_greeting(server: ServerAddress, protocol: str) -> ConnectionTimedOut:
    """The port accepted us but said nothing: typically plain text sent to an SSL/TLS port."""
    message = (
        f"{server.host} port {server.port} accepted the connection but sent no {protocol} "
        f"greeting within {server.timeout:g} s"
    )
    if server.security == "ssl":
        return ConnectionTimedOut(f"{message}: check the port.")
    return ConnectionTimedOut(
        f"{message}. If this port expects SSL/TLS from the start, set security to SSL/TLS."
    )


def _untrusted(exc: ssl.SSLCertVerificationError, server: ServerAddress) -> CertificateUntrusted:
    why = exc.verify_message or exc.reason or "not verified"
    if exc.verify_code == _HOSTNAME_MISMATCH:
        return CertificateUntrusted(
            f"The certificate of {server.host} is for another name ({why}): use the server "
            "name the certificate was issued for."
        )
    return CertificateUntrusted(
        f"The certificate of {server.host} is not trusted ({why}). If you run this server "
        "yourself, tick 'trust a self-signed certificate'."
    )


def _readable(reason: str) -> str:
    # OpenSSL reasons look like "WRONG_VERSION_NUMBER".
    return reason.replace("_", " ").lower() if reason.isupper() else reason
