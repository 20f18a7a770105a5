"""When each channel is polled next, and what the last poll did.

One dispatcher, run by beat every few seconds, claims the channels whose `next_poll_at` is due
with a conditional UPDATE (two dispatchers never claim one channel) and enqueues their polls.
Errors back off exponentially with jitter, up to an hour; one log line per change of state.
Channels on push (IMAP IDLE, pollers/listener.py) are polled at a longer safety-net interval.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from mailboxes.models import Mailbox
from pollers.push import push_expire_stale
from providers.errors import ProviderError

logger = logging.getLogger(__name__)
DISPATCH_LIMIT = 500


def polls_claim_due(*, now: datetime | None = None, limit: int = DISPATCH_LIMIT) -> list[int]:
    """Claim up to `limit` due channels; their next poll moves one interval ahead: the refresh
    interval, or for a channel on push (IMAP IDLE) the longer safety-net interval."""
    now = now or timezone.now()
    push_expire_stale(now=now)
    due = (
        # A channel whose OAuth2 sign-in was refused waits for a new one (it sets next_poll_at).
        Mailbox.objects.filter(enabled=True, listen=True, oauth_refused_at__isnull=True)
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
        .order_by("next_poll_at")
        .values_list("pk", "next_poll_at", "refresh_interval", "push_state")[:limit]
    )
    safety_net = settings.POSTROOM_IDLE_SAFETY_POLL_SECONDS
    claimed = []
    for pk, due_at, interval, push_state in due:
        # push_expire_stale just turned channels whose listener is gone back to polling.
        if push_state == Mailbox.PushState.PUSH:
            interval = max(interval, safety_net)
        # Conditional on the value we read: a second dispatcher that read it too loses here.
        if Mailbox.objects.filter(pk=pk, next_poll_at=due_at).update(
            next_poll_at=now + timedelta(seconds=interval)
        ):
            claimed.append(pk)
    return claimed


def poll_request_now(*, mailbox_id: int) -> None:
    """Make a channel due at once (the dispatcher's next tick picks it up)."""
    Mailbox.objects.filter(pk=mailbox_id).update(next_poll_at=timezone.now())


def poll_record_success(*, mailbox: Mailbox, stored: int, duration_ms: int) -> None:
    now = timezone.now()
    fields = {
        "last_polled_at": now,
        "last_poll_stored": stored,
        "last_poll_duration_ms": duration_ms,
        "consecutive_failures": 0,
        "status": Mailbox.Status.OK,
        "last_checked_at": now,
        "status_message": f"Last poll {now:%H:%M:%S} UTC stored {stored} message(s).",
    }
    if mailbox.consecutive_failures:
        fields["next_poll_at"] = now + timedelta(seconds=mailbox.refresh_interval)
        logger.info(
            "channel %s: polling works again after %d failure(s)",
            mailbox.channel_id,
            mailbox.consecutive_failures,
        )
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)


def poll_record_failure(
    *, mailbox: Mailbox, error: ProviderError, duration_ms: int, stored: int = 0
) -> None:
    now = timezone.now()
    failures = mailbox.consecutive_failures + 1
    message = str(error)
    if mailbox.status != Mailbox.Status.ERROR or mailbox.last_error != message:
        logger.warning("channel %s: poll failed (%s): %s", mailbox.channel_id, error.kind, message)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        last_polled_at=now,
        last_poll_stored=stored,
        last_poll_duration_ms=duration_ms,
        consecutive_failures=failures,
        status=Mailbox.Status.ERROR,
        last_error=message,
        last_error_at=now,
        last_checked_at=now,
        status_message=message[:500],
        next_poll_at=now + backoff(refresh=mailbox.refresh_interval, failures=failures),
    )


def backoff(*, refresh: int, failures: int) -> timedelta:
    """refresh × 2^(failures-1), ±20% jitter so channels on one broken server spread out."""
    ceiling = settings.POSTROOM_POLL_MAX_BACKOFF_SECONDS
    seconds = min(ceiling, refresh * 2 ** min(failures - 1, 20))
    return timedelta(seconds=min(ceiling, seconds * random.uniform(0.8, 1.2)))
