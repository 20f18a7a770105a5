"""Messages the server would not hand over: kept in the ledger without bytes, asked for again.

A FETCH answered NO (or a BYE) for one message, a RETR answered -ERR: the message is still on
the server and must not block the mail behind it, nor be forgotten. Its row is stored (so the
cursor can pass it) as failed, with the server's reason, and later polls ask for it again,
further apart each time (a server's passing trouble clears; a message it can never convert
does not). After the last attempt it waits for an administrator's "Retry".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from mailboxes.models import InboundMessage, Mailbox

# Wait before each new request; once they are used up the row waits for "Retry".
REFETCH_DELAYS = (
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=12),
)
LEFT_ON_SERVER = "It stays on the server, untouched."


def unreadable_mark(row: InboundMessage, reason: str, *, now: datetime | None = None) -> None:
    """Record on an unsaved row that the server refused it, with the first retry scheduled."""
    now = now or timezone.now()
    row.fetch_error, row.fetch_attempts = reason, 1
    row.fetch_retry_at = now + REFETCH_DELAYS[0]
    row.outcome = InboundMessage.Outcome.FAILED
    row.outcome_reason = _reason(row)
    # Never delete or move what could not be read.
    row.server_action_done = True


def refetch_due(*, mailbox: Mailbox, now: datetime | None = None) -> list[InboundMessage]:
    """Rows of this channel to ask the server for again now (the current numbering only)."""
    rows = InboundMessage.objects.filter(
        mailbox=mailbox, fetch_retry_at__lte=now or timezone.now()
    ).exclude(fetch_error="")
    if mailbox.protocol == Mailbox.Protocol.IMAP:
        rows = rows.filter(uidvalidity=mailbox.uidvalidity, uid__isnull=False)
    return list(rows.order_by("pk"))


def refetch_failed(
    *, row: InboundMessage, reason: str, gone: bool = False, now: datetime | None = None
) -> None:
    """Refused again (or no longer on the server): schedule the next request, or stop asking."""
    now = now or timezone.now()
    row.fetch_attempts += 1
    row.fetch_error = reason
    more = not gone and row.fetch_attempts <= len(REFETCH_DELAYS)
    row.fetch_retry_at = now + REFETCH_DELAYS[row.fetch_attempts - 1] if more else None
    row.outcome_reason = _reason(row, gone=gone)
    row.save(update_fields=["fetch_attempts", "fetch_error", "fetch_retry_at", "outcome_reason"])


def refetch_request(*, message_id: int) -> bool:
    """An administrator's "Retry" on a message never read: ask the server at the next poll.
    False if the message was read (there is nothing to fetch)."""
    row = InboundMessage.objects.get(pk=message_id)
    if not row.fetch_error:
        return False
    row.fetch_retry_at = timezone.now()
    row.outcome_reason = (
        f"The server would not hand this message over ({row.fetch_error}). Asked for again at "
        "the next poll. " + LEFT_ON_SERVER
    )
    row.save(update_fields=["fetch_retry_at", "outcome_reason"])
    return True


def _reason(row: InboundMessage, *, gone: bool = False) -> str:
    said = f"The server would not hand this message over ({row.fetch_error})."
    if gone:
        return f"{said} It is no longer on the server, so it cannot be asked for again."
    if row.fetch_retry_at is None:
        return (
            f"{said} Asked {row.fetch_attempts} times. {LEFT_ON_SERVER} Read it there "
            "(e.g. in webmail) or forward it to the channel's address; “Retry” asks again."
        )
    return (
        f"{said} Postroom asks again at {row.fetch_retry_at:%Y-%m-%d %H:%M} UTC. " + LEFT_ON_SERVER
    )
