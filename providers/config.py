"""The settings the protocol code takes: small frozen dataclasses, no ORM."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SECURITY_CHOICES = ("none", "starttls", "ssl")


@dataclass(frozen=True)
class NetworkPolicy:
    """Where administrator-entered hosts may not lead (loopback, metadata services...)."""

    blocked_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, networks: Iterable[str]) -> NetworkPolicy:
        # strict=False: "10.0.0.1/8" means 10.0.0.0/8, not a startup crash.
        parsed = (ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip())
        return cls(tuple(parsed))


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    security: str  # "none" | "starttls" | "ssl"
    trust_self_signed: bool = False
    timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}, not {self.security!r}")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(default="", repr=False)

    @property
    def secret(self) -> str:
        """What must never appear in a message: replaced by *** in what servers say."""
        return self.password


@dataclass(frozen=True)
class TokenCredentials:
    """An OAuth2 access token for SASL OAUTHBEARER or XOAUTH2: the login is `username`."""

    username: str
    access_token: str = field(default="", repr=False)

    @property
    def secret(self) -> str:
        return self.access_token


AnyCredentials = Credentials | TokenCredentials


@dataclass(frozen=True)
class IncomingSettings:
    protocol: str  # "imap" | "pop3"
    server: ServerAddress
    credentials: AnyCredentials
    folder: str = "INBOX"


@dataclass(frozen=True)
class SmtpSettings:
    server: ServerAddress
    credentials: AnyCredentials | None  # None: send without AUTH


@dataclass(frozen=True)
class SendGridSettings:
    api_token: str = field(repr=False)
    api_url: str = "https://api.sendgrid.com"


@dataclass(frozen=True)
class MailboxCheck:
    message_count: int
    uidvalidity: int | None = None  # IMAP
    uidnext: int | None = None  # IMAP
