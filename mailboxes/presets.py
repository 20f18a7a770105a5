"""Provider presets: server names, ports and security for well-known mail providers.

A preset fills only what the administrator left empty, so a preset never overwrites an edit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    security: str  # a mailboxes.models.Security value


@dataclass(frozen=True)
class Preset:
    label: str
    imap: Endpoint | None = None
    pop3: Endpoint | None = None
    smtp: Endpoint | None = None
    copy_to_sent: bool = True  # False where the provider files sent mail itself
    sent_folder: str = "Sent"
    oauth_provider: str = ""  # the OAuth preset to use when auth is OAuth2


PRESETS: dict[str, Preset] = {
    "generic": Preset("Other provider"),
    "gmail": Preset(
        "Gmail / Google Workspace",
        imap=Endpoint("imap.gmail.com", 993, "ssl"),
        pop3=Endpoint("pop.gmail.com", 995, "ssl"),
        smtp=Endpoint("smtp.gmail.com", 587, "starttls"),
        copy_to_sent=False,
        sent_folder="[Gmail]/Sent Mail",
        oauth_provider="google",
    ),
    "microsoft": Preset(
        "Microsoft 365 / Outlook.com",
        imap=Endpoint("outlook.office365.com", 993, "ssl"),
        pop3=Endpoint("outlook.office365.com", 995, "ssl"),
        smtp=Endpoint("smtp.office365.com", 587, "starttls"),
        copy_to_sent=False,
        sent_folder="Sent Items",
        oauth_provider="microsoft",
    ),
    "yahoo": Preset(
        "Yahoo Mail",
        imap=Endpoint("imap.mail.yahoo.com", 993, "ssl"),
        pop3=Endpoint("pop.mail.yahoo.com", 995, "ssl"),
        smtp=Endpoint("smtp.mail.yahoo.com", 465, "ssl"),
    ),
    "icloud": Preset(
        "iCloud Mail",
        imap=Endpoint("imap.mail.me.com", 993, "ssl"),
        smtp=Endpoint("smtp.mail.me.com", 587, "starttls"),
        sent_folder="Sent Messages",
    ),
}

PRESET_CHOICES = [(key, preset.label) for key, preset in PRESETS.items()]

# Well-known ports and the security they imply, for the "port and security do not fit" warning.
IMPLICIT_TLS_PORTS = {993, 995, 465}
PLAIN_OR_STARTTLS_PORTS = {143, 110, 25, 587}
DEFAULT_PORTS = {
    ("imap", "ssl"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "ssl"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("smtp", "ssl"): 465,
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 25,
}
