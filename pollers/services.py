"""Polling a channel: lease, fetch, record the outcome, release."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from django.utils import timezone

from cases.services import inbound_process_many
from mailboxes.models import InboundMessage, Mailbox
from pollers.fetch import PollContext, mailbox_fetch
from pollers.leases import lease_acquire, lease_owner_new, lease_release, lease_renew
from pollers.log_context import channel_logged
from pollers.metrics import MESSAGES_PROCESSED, poll_observed
from pollers.round_trip import round_trips_catch, round_trips_tidy
from pollers.schedule import poll_record_failure, poll_record_success
from providers.errors import ProviderError

logger = logging.getLogger(__name__)

# A worker killed between storing a batch and processing it leaves the rows waiting; the
# channel's next poll, under its lease, processes them. Younger rows may still be in the hands
# of a history import slice working through its batch.
LEFT_BEHIND_AFTER = timedelta(minutes=10)
LEFT_BEHIND_BATCH = 200


@dataclass(frozen=True)
class PollResult:
    ran: bool  # False: another worker holds the channel (a "poll again" mark was left)
    stored: int = 0
    again: bool = False  # a wake-up arrived meanwhile: poll once more
    error: str = ""


def mailbox_poll(
    *, mailbox_id: int, on_batch: Callable[[list[InboundMessage]], None] | None = None
) -> PollResult:
    """Poll one channel now; `on_batch` is told of each stored batch (manage.py poll)."""
    mailbox = Mailbox.objects.filter(
        pk=mailbox_id, enabled=True, listen=True, oauth_refused_at__isnull=True
    ).first()
    if mailbox is None:
        # Deleted, offline, outbound-only or waiting for a new OAuth2 sign-in since it was queued.
        return PollResult(ran=False)
    owner = lease_owner_new()
    if not lease_acquire(mailbox_id=mailbox_id, owner=owner):
        return PollResult(ran=False)
    try:
        mailbox.refresh_from_db()  # what the lease now protects
        with channel_logged(mailbox):
            result = _poll_leased(mailbox, owner, on_batch)
    finally:
        again = lease_release(mailbox_id=mailbox_id, owner=owner)
    return replace(result, again=again)


def _poll_leased(mailbox: Mailbox, owner: str, on_batch=None) -> PollResult:
    started = time.monotonic()

    def process(rows: list[InboundMessage]) -> None:
        rows_process(rows)
        if on_batch is not None:
            on_batch(rows)

    ctx = PollContext(
        mailbox=mailbox,
        renew=lambda: lease_renew(mailbox_id=mailbox.pk, owner=owner),
        process=process,
    )
    try:
        if left_behind := pending_left_behind(mailbox):
            process(left_behind)
        outcome = mailbox_fetch(ctx)
        if outcome.action_error:
            raise outcome.action_error
    except ProviderError as err:
        # ctx.outcome, not the return value: a connection that breaks in the second batch
        # raises, and the first batch is stored all the same.
        stored = len(ctx.outcome.stored)
        poll_record_failure(mailbox=mailbox, error=err, duration_ms=_ms(started), stored=stored)
        poll_observed(ok=False, seconds=time.monotonic() - started, stored=stored)
        return PollResult(ran=True, stored=stored, error=str(err))
    stored = len(outcome.stored)
    poll_record_success(mailbox=mailbox, stored=stored, duration_ms=_ms(started))
    poll_observed(ok=True, seconds=time.monotonic() - started, stored=stored)
    if mailbox.round_trip_state or mailbox.round_trip_enabled:
        round_trips_tidy(mailbox=mailbox)  # after the poll, still under its lease
    return PollResult(ran=True, stored=stored)


def pending_left_behind(mailbox: Mailbox) -> list[InboundMessage]:
    """Stored rows nobody processed (their worker died), oldest first."""
    cutoff = timezone.now() - LEFT_BEHIND_AFTER
    waiting = InboundMessage.objects.filter(
        mailbox=mailbox, outcome=InboundMessage.Outcome.PENDING, stored_at__lt=cutoff
    )
    return list(waiting.order_by("pk")[:LEFT_BEHIND_BATCH])


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def rows_process(rows) -> None:
    """Run the pipeline on a stored batch (round-trip probes set aside first), then free
    what it left behind."""
    ids = [row.pk for row in round_trips_catch(rows)]
    for outcome in inbound_process_many(message_ids=ids):
        MESSAGES_PROCESSED.labels(outcome=outcome).inc()
    # A batch leaves reference cycles that hold message bytes (Django's FieldFile points back at
    # its row). Python frees those only in a full collection, which it runs ever more rarely as
    # the heap grows; collecting once per batch keeps a long poll's memory flat.
    gc.collect()
