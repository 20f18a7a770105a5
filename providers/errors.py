"""Typed errors with a sentence an administrator can act on, and a `permanent` flag.

`permanent` answers "will retrying without a configuration change help?": a refused password
stays refused, a timeout may pass. Callers take channels offline on permanent errors.
"""

from __future__ import annotations

import re
from typing import Any

# Enough of a server's reply to recognise it; some servers answer with a whole page.
MAX_SERVER_TEXT = 200
# Dovecot (2.3+) ends tagged replies with how long the command took, "(0.001 + 0.000 secs)".
# It differs on every attempt, so the same failure would read as a new one each poll (logged
# again, last_error rewritten); it tells an administrator nothing, so it is dropped.
_DOVECOT_TIMING = re.compile(r" \(\d+\.\d+(?: \+ \d+\.\d+)* secs\)")


class ProviderError(Exception):
    kind: str = "error"
    permanent: bool = False

    def __init__(self, message: str, *, permanent: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if permanent is not None:
            self.permanent = permanent

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles errors; keep a per-instance `permanent` across the trip.
        return (type(self), (self.message,), {"permanent": self.permanent})


class AuthenticationFailed(ProviderError):
    kind = "auth"
    permanent = True


class HostNotFound(ProviderError):
    kind = "host_not_found"
    permanent = True


class ConnectionRefused(ProviderError):
    kind = "port_closed"


class ConnectionTimedOut(ProviderError):
    kind = "timeout"


class TLSFailed(ProviderError):
    kind = "tls"
    permanent = True


class CertificateUntrusted(ProviderError):
    kind = "certificate"
    permanent = True


class FolderMissing(ProviderError):
    kind = "folder_missing"
    permanent = True


class AddressBlocked(ProviderError):
    kind = "blocked"
    permanent = True


class ProtocolError(ProviderError):
    kind = "protocol"


class FetchRefused(ProviderError):
    """The server answered a FETCH of `uids` with NO, or hung up with BYE over it: it cannot
    hand over one of them at least. Asked for one at a time, the one it refuses is found; the
    others are fine. `connection_lost`: the session is gone (BYE), a new one is needed."""

    kind = "fetch_refused"

    def __init__(
        self,
        message: str,
        *,
        uids: tuple[int, ...] = (),
        reason: str = "",
        connection_lost: bool = False,
        permanent: bool | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent)
        self.uids, self.reason, self.connection_lost = tuple(uids), reason, connection_lost

    def __reduce__(self) -> tuple[Any, ...]:
        state = {
            "permanent": self.permanent,
            "uids": self.uids,
            "reason": self.reason,
            "connection_lost": self.connection_lost,
        }
        return (type(self), (self.message,), state)


class MessageUnreadable(ProviderError):
    """One message the server would not hand over; the channel and the messages behind it are
    fine, so the caller records this one as failed (by `uidl`) and reads on."""

    kind = "message_unreadable"

    def __init__(
        self, message: str, *, uidl: str = "", reason: str = "", permanent: bool | None = None
    ) -> None:
        super().__init__(message, permanent=permanent)
        self.uidl = uidl
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"permanent": self.permanent, "uidl": self.uidl, "reason": self.reason}
        return (type(self), (self.message,), state)


def server_said(reply: str | bytes | None, *secrets: str) -> str:
    """A server's reply made safe to show: decoded, one line, shortened, secrets removed.

    A server has no business echoing a password, but a broken one might; never pass it on.
    """
    if reply is None:
        return ""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = _DOVECOT_TIMING.sub("", " ".join(text.split()))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if len(text) > MAX_SERVER_TEXT:
        text = text[: MAX_SERVER_TEXT - 1] + "…"
    return text


def auth_refused(
    host: str, reply: str | bytes | None, *secrets: str, permanent: bool = True
) -> AuthenticationFailed:
    """The same advice for every protocol: most refusals at big providers need app passwords."""
    said = server_said(reply, *secrets)
    detail = f" (server said: {said})" if said else ""
    return AuthenticationFailed(
        f"{host} refused the username or password{detail}. Check them; Gmail and Microsoft "
        "need an app password or OAuth2.",
        permanent=permanent,
    )


def token_refused(
    host: str, reply: str | bytes | None, *secrets: str, permanent: bool = True
) -> AuthenticationFailed:
    """An access token the server would not take (XOAUTH2): expired, revoked, wrong scope."""
    said = server_said(reply, *secrets)
    detail = f" (server said: {said})" if said else ""
    return AuthenticationFailed(
        f"{host} refused the OAuth2 access token{detail}. Check that the sign-in granted the "
        "mail scopes and that the signed-in account may use this mailbox.",
        permanent=permanent,
    )
