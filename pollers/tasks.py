"""Celery tasks: thin, taking ids and calling one service each."""

from __future__ import annotations

import logging

from celery import shared_task

from cases.confirmations import confirmations_expire
from cases.retention import retention_purge
from pollers.heartbeat import BEAT, heartbeat_stamp
from pollers.history import history_import_slice, history_stalled
from pollers.leases import LeaseLost
from pollers.outbox import outbox_send_due, outbox_sweep
from pollers.round_trip import round_trip_send, round_trips_claim_due, round_trips_expire
from pollers.schedule import polls_claim_due
from pollers.services import mailbox_poll
from pollers.webhooks import webhook_deliver, webhook_sweep

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


@shared_task(name="pollers.deliver_webhook", ignore_result=True, acks_late=True)
def deliver_webhook(delivery_id: int) -> None:
    webhook_deliver(delivery_id=delivery_id)


@shared_task(name="pollers.sweep_webhooks", ignore_result=True)
def sweep_webhooks() -> int:
    """Beat runs this every minute: retries that are due, and sends a lost task left behind."""
    due = webhook_sweep()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task(name="pollers.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """Beat runs this every 30 s; /healthz reports how long ago a worker last ran it."""
    heartbeat_stamp(name=BEAT)


@shared_task(name="pollers.dispatch_round_trips", ignore_result=True)
def dispatch_round_trips() -> int:
    """Beat runs this every 30 s: probes that did not come back, then those that are due."""
    round_trips_expire()
    claimed = round_trips_claim_due()
    for mailbox_id in claimed:
        send_round_trip.delay(mailbox_id)
    return len(claimed)


@shared_task(name="pollers.send_round_trip", ignore_result=True)
def send_round_trip(mailbox_id: int) -> None:
    round_trip_send(mailbox_id=mailbox_id)
