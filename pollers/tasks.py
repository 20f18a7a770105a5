"""Celery tasks: thin, taking ids and calling one service each."""

from __future__ import annotations

import logging

from celery import shared_task

from pollers.leases import LeaseLost
from pollers.schedule import polls_claim_due
from pollers.services import mailbox_poll

logger = logging.getLogger(__name__)


@shared_task(name="pollers.dispatch_due_polls", ignore_result=True)
def dispatch_due_polls() -> int:
    """Beat runs this every few seconds: one entry serves any number of channels."""
    claimed = polls_claim_due()
    for mailbox_id in claimed:
        poll_mailbox.delay(mailbox_id)
    return len(claimed)


@shared_task(name="pollers.poll_mailbox", ignore_result=True, acks_late=True)
def poll_mailbox(mailbox_id: int) -> None:
    try:
        result = mailbox_poll(mailbox_id=mailbox_id)
    except LeaseLost:
        logger.warning("channel %s: lease lost mid-poll; the new holder carries on", mailbox_id)
        return
    if result.again:
        poll_mailbox.delay(mailbox_id)
