"""SASL mechanisms that carry an OAuth2 access token, shared by IMAP, POP3 and SMTP.

OAUTHBEARER (RFC 7628) is the standard one and is used whenever the server offers it; XOAUTH2
(Google's, also Microsoft's) otherwise. Both send the token in a first client response; a
refused token comes back as a challenge holding a JSON error, which the client must answer
(OAUTHBEARER: a single %x01, RFC 7628 3.2.3; XOAUTH2: an empty response) before the server
says no.
"""

from __future__ import annotations

from collections.abc import Iterable

from providers.config import ServerAddress, TokenCredentials
from providers.errors import AuthenticationFailed

OAUTHBEARER = "OAUTHBEARER"
XOAUTH2 = "XOAUTH2"
TOKEN_MECHANISMS = (OAUTHBEARER, XOAUTH2)  # in order of preference
_ERROR_ANSWERS = {OAUTHBEARER: b"\x01", XOAUTH2: b""}


def token_mechanism(offered: Iterable[str]) -> str | None:
    """The mechanism to log in with an access token, of those the server offers."""
    names = {name.upper() for name in offered}
    return next((m for m in TOKEN_MECHANISMS if m in names), None)


def initial_response(mechanism: str, credentials: TokenCredentials, server: ServerAddress) -> bytes:
    """The client's first message (before base64), naming the account and the token."""
    user, token = credentials.username, credentials.access_token
    if mechanism == OAUTHBEARER:
        # The GS2 header's authzid escapes "=" and "," (RFC 5801 4); host and port say where
        # the token is presented (RFC 7628 3.1).
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        fields = f"host={server.host}\x01port={server.port}\x01auth=Bearer {token}"
        return f"n,a={authzid},\x01{fields}\x01\x01".encode()
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def error_answer(mechanism: str) -> bytes:
    """What the client sends back to the server's JSON error challenge."""
    return _ERROR_ANSWERS[mechanism]


def not_offered(server: ServerAddress, where: str) -> AuthenticationFailed:
    """The server offers neither token mechanism; `where` names what was looked at."""
    return AuthenticationFailed(
        f"{server.host} port {server.port} does not offer OAuth2 logins ({where} lists neither "
        "OAUTHBEARER nor XOAUTH2): use a password instead, or check the server's host and port."
    )
