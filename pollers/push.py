"""Whether a channel is on push (IMAP IDLE) or polling, since when and why, on its row.

The listener that holds a channel writes it; the dispatcher reads it to poll channels on push
at the longer safety-net interval, and turns it back to polling when the listener holding the
channel stopped renewing its lease (the process died), so a channel is never left waiting for
notifications nobody listens for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q

from mailboxes.models import Mailbox

logger = logging.getLogger(__name__)

PushState = Mailbox.PushState
PushReason = Mailbox.PushReason
STALE_DETAIL = "The listener holding the channel stopped renewing its lease."


@dataclass(frozen=True)
class Push:
    """One channel's push state as its listener last wrote it."""

    state: str = PushState.NONE
    reason: str = PushReason.NONE
    detail: str = ""
    since: datetime | None = None

    def then(self, state: str, reason: str, detail: str, now: datetime) -> Push:
        """The state after an event: "since" moves only when the state itself changes."""
        since = self.since if state == self.state and self.since else now
        return Push(state, reason, detail[:500], since)


@dataclass(frozen=True)
class PushChange:
    mailbox_id: int
    push: Push
    refresh_interval: int  # seconds; a channel leaving push is polled within one of these
    left_push: bool


def push_record(*, owner: str, changes: list[PushChange], now: datetime) -> None:
    """Write new push states of channels this listener holds, in one transaction.

    A channel that leaves push gets its next poll within its refresh interval: the safety-net
    poll may be many minutes away, and nothing announces its mail any more.
    """
    with transaction.atomic(durable=True):
        for change in changes:
            push = change.push
            held = Mailbox.objects.filter(pk=change.mailbox_id, idle_lease_owner=owner)
            held.update(
                push_state=push.state,
                push_reason=push.reason,
                push_detail=push.detail,
                push_since=push.since,
            )
            if change.left_push:
                soon = now + timedelta(seconds=change.refresh_interval)
                held.filter(next_poll_at__gt=soon).update(next_poll_at=soon)


def push_expire_stale(*, now: datetime) -> int:
    """Channels on push whose listener stopped renewing its lease: back to polling, poll now."""
    stale = Mailbox.objects.filter(push_state=PushState.PUSH).filter(
        Q(idle_lease_expires_at__isnull=True) | Q(idle_lease_expires_at__lt=now)
    )
    count = stale.update(
        push_state=PushState.POLLING,
        push_reason=PushReason.STOPPED,
        push_detail=STALE_DETAIL,
        push_since=now,
        next_poll_at=now,
    )
    if count:
        logger.warning("%d channel(s) lost their IMAP IDLE listener; polling them", count)
    return count


def push_current(mailbox: Mailbox) -> Push:
    return Push(mailbox.push_state, mailbox.push_reason, mailbox.push_detail, mailbox.push_since)
