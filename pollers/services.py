"""Polling a channel: lease, fetch, record the outcome, release."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, replace

from cases.services import inbound_process_many
from mailboxes.models import Mailbox
from pollers.fetch import PollContext, mailbox_fetch
from pollers.leases import lease_acquire, lease_owner_new, lease_release, lease_renew
from pollers.schedule import poll_record_failure, poll_record_success
from providers.errors import ProviderError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollResult:
    ran: bool  # False: another worker holds the channel (a "poll again" mark was left)
    stored: int = 0
    again: bool = False  # a wake-up arrived meanwhile: poll once more
    error: str = ""


def mailbox_poll(*, mailbox_id: int) -> PollResult:
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
        result = _poll_leased(mailbox, owner)
    finally:
        again = lease_release(mailbox_id=mailbox_id, owner=owner)
    return replace(result, again=again)


def _poll_leased(mailbox: Mailbox, owner: str) -> PollResult:
    started = time.monotonic()
    ctx = PollContext(
        mailbox=mailbox,
        renew=lambda: lease_renew(mailbox_id=mailbox.pk, owner=owner),
        process=rows_process,
    )
    try:
        outcome = mailbox_fetch(ctx)
        if outcome.action_error:
            raise outcome.action_error
    except ProviderError as err:
        # ctx.outcome, not the return value: a connection that breaks in the second batch
        # raises, and the first batch is stored all the same.
        stored = len(ctx.outcome.stored)
        poll_record_failure(mailbox=mailbox, error=err, duration_ms=_ms(started), stored=stored)
        return PollResult(ran=True, stored=stored, error=str(err))
    stored = len(outcome.stored)
    poll_record_success(mailbox=mailbox, stored=stored, duration_ms=_ms(started))
    return PollResult(ran=True, stored=stored)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def rows_process(rows) -> None:
    """Run the pipeline on a stored batch, then free what it left behind."""
    inbound_process_many(message_ids=[row.pk for row in rows])
    # A batch leaves reference cycles that hold message bytes (Django's FieldFile points back at
    # its row). Python frees those only in a full collection, which it runs ever more rarely as
    # the heap grows; collecting once per batch keeps a long poll's memory flat.
    gc.collect()
