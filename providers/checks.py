"""One entry point per side of a channel, for "test connection" and the pollers."""

from __future__ import annotations

from providers.config import IncomingSettings, MailboxCheck, NetworkPolicy
from providers.imap import imap_check
from providers.pop3 import pop3_check
from providers.sendgrid import sendgrid_check
from providers.smtp import smtp_check

__all__ = ["incoming_check", "sendgrid_check", "smtp_check"]


def incoming_check(settings: IncomingSettings, policy: NetworkPolicy) -> MailboxCheck:
    if settings.protocol == "imap":
        return imap_check(settings, policy)
    if settings.protocol == "pop3":
        return pop3_check(settings, policy)
    raise ValueError(f"unknown incoming protocol {settings.protocol!r}")
