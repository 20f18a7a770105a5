"""Celery tasks: thin, taking ids and calling one service each."""

from __future__ import annotations

import logging

from celery import shared_task

from cases.confirmations import confirmations_expire
from cases.retention import retention_purge
from pollers.history import history_import_slice, history_stalled
from pollers.leases import LeaseLost
from pollers.outbox import outbox_send_due, outbox_sweep
from pollers.schedule import polls_claim_due
from pollers.services import mailbox_poll

logger = logging.getLogger(__name__)


@shared_task(name="pollers.dispatch_due_polls", ignore_result=True)
def dispatch_due_polls() -> int:
    """Beat runs this every few seconds: one entry serves any number of channels."""
    claimed = polls_claim_due()
    for mailbox_id in claimed:
        poll_mailbox.delay(mailbox_id)
    for mailbox_id in history_stalled():
        import_history.delay(mailbox_id)
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


@shared_task(name="pollers.send_outbox", ignore_result=True, acks_late=True)
def send_outbox(mailbox_id: int) -> None:
    outbox_send_due(mailbox_id=mailbox_id)


@shared_task(name="pollers.sweep_outbox", ignore_result=True)
def sweep_outbox() -> int:
    """Beat runs this every minute: a broker can lose a task together with its worker."""
    mailbox_ids = outbox_sweep()
    for mailbox_id in mailbox_ids:
        send_outbox.delay(mailbox_id)
    return len(mailbox_ids)


@shared_task(name="pollers.import_history", ignore_result=True, acks_late=True)
def import_history(mailbox_id: int) -> None:
    """One slice of an import of older mail; the next slice queues behind whatever polls
    arrived meanwhile, so new mail is never delayed behind history."""
    if history_import_slice(mailbox_id=mailbox_id).more:
        import_history.delay(mailbox_id)


@shared_task(name="pollers.cases_housekeeping", ignore_result=True)
def cases_housekeeping() -> None:
    """Beat runs this hourly: retention purges, and held mail nobody confirmed expires."""
    retention_purge()
    confirmations_expire()
