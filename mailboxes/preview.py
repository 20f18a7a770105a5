"""What is in a channel's folder, before the administrator chooses what to import.

Headers only, read-only (IMAP EXAMINE and BODY.PEEK, POP3 TOP): a preview changes nothing on
the server. Read in chunks, so a folder of 100,000 messages costs memory for the counts only.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mailboxes.automatic import automatic_reason
from mailboxes.models import Mailbox
from mailboxes.services import mailbox_incoming_settings, network_policy
from providers.imap import imap_connect
from providers.imap_folder import ImapFolder
from providers.pop3 import pop3_connect
from providers.pop3_maildrop import Pop3Maildrop

HEADER_FIELDS = [
    "FROM",
    "DATE",
    "AUTO-SUBMITTED",
    "PRECEDENCE",
    "LIST-ID",
    "LIST-UNSUBSCRIBE",
    "RETURN-PATH",
    "X-AUTOREPLY",
]
CHUNK = 500
TOP_SENDERS = 10
WINDOWS_DAYS = (7, 30, 90, 365)
parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass
class FolderPreview:
    total: int = 0
    earliest: datetime | None = None
    latest: datetime | None = None
    automatic: int = 0
    senders: Counter = field(default_factory=Counter)
    within_days: dict[int, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS_DAYS, 0))

    @property
    def top_senders(self) -> list[tuple[str, int]]:
        return self.senders.most_common(TOP_SENDERS)

    def add(self, headers: bytes, when: datetime | None, now: datetime) -> None:
        parsed = parser.parsebytes(headers)
        self.total += 1
        sender = email.utils.parseaddr(str(parsed.get("From", "")))[1].lower()
        self.senders[sender or "(no sender)"] += 1
        if automatic_reason(parsed):
            self.automatic += 1
        when = when or header_date(parsed)
        if when is None:
            return
        self.earliest = min(self.earliest or when, when)
        self.latest = max(self.latest or when, when)
        for days in WINDOWS_DAYS:
            if when >= now - timedelta(days=days):
                self.within_days[days] += 1


def mailbox_preview(*, mailbox: Mailbox) -> FolderPreview:
    settings = mailbox_incoming_settings(mailbox=mailbox)
    if mailbox.protocol == Mailbox.Protocol.POP3:
        return _pop3_preview(settings)
    return _imap_preview(settings, mailbox.folder)


def _imap_preview(settings, folder_name: str) -> FolderPreview:
    preview, now = FolderPreview(), datetime.now(UTC)
    with imap_connect(settings, network_policy()) as client:
        folder = ImapFolder(client, folder_name, readonly=True)
        uids = folder.all_uids()
        for start in range(0, len(uids), CHUNK):
            chunk = uids[start : start + CHUNK]
            dates = folder.sizes(chunk)  # INTERNALDATE: the server's arrival time
            for uid, headers in folder.headers(chunk, HEADER_FIELDS).items():
                preview.add(headers, dates.get(uid, (0, None))[1], now)
    return preview


def _pop3_preview(settings) -> FolderPreview:
    preview, now = FolderPreview(), datetime.now(UTC)
    with pop3_connect(settings, network_policy()) as client:
        maildrop = Pop3Maildrop(client)
        for message in maildrop.messages():
            headers = maildrop.retrieve(message, max_size=0).raw  # TOP n 0: headers only
            preview.add(headers, None, now)
        maildrop.quit()
    return preview


def header_date(parsed) -> datetime | None:
    """The Date header as an aware datetime, or None when it is missing or unreadable."""
    try:
        when = email.utils.parsedate_to_datetime(str(parsed.get("Date", "")))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
