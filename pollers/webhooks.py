"""Sending the webhook flow's deliveries: claim a due row, POST it, record the outcome.

A claim is the row's state "sending" with an expiry, taken by conditional UPDATE; the expiry
written is the claim's token, so a worker whose claim ran out (and was taken over) cannot
record over the new holder. A crash between the endpoint's 2xx and our commit sends the same
body again, with the same delivery id: receivers dedupe on X-Postroom-Delivery.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from cases.models import WebhookDelivery
from mailboxes.services import network_policy
from pollers.outbox import retry_delay
from providers.errors import ProviderError
from providers.webhook import WebhookRequest, webhook_post

logger = logging.getLogger(__name__)
State = WebhookDelivery.State
# Longer than a POST can take (connect + answer, each under the timeout).
CLAIM_SECONDS = 120
RETRY_MAX = timedelta(hours=1)


def webhook_deliver(*, delivery_id: int) -> str | None:
    """Send one delivery if it is due and ours to claim; its state afterwards, or None."""
    claim = _claim(delivery_id)
    if claim is None:
        return None
    row = WebhookDelivery.objects.select_related("mailbox").get(pk=delivery_id)
    request = WebhookRequest(
        url=row.url,
        body=row.body.encode(),
        delivery_id=str(row.pk),
        secret=row.mailbox.webhook_secret,
        timeout=settings.POSTROOM_WEBHOOK_TIMEOUT,
    )
    try:
        webhook_post(request, network_policy())
    except ProviderError as error:
        return _failed(row, claim, error)
    _mine(row, claim).update(
        state=State.DELIVERED, delivered_at=timezone.now(), claim_expires_at=None, last_error=""
    )
    return State.DELIVERED


def webhook_sweep() -> list[int]:
    """Deliveries that are due, or whose claim expired (their worker died)."""
    due = WebhookDelivery.objects.filter(_due(timezone.now())).order_by("next_attempt_at", "pk")
    return list(due.values_list("pk", flat=True)[:500])


def _due(now) -> Q:
    waiting = Q(state__in=[State.QUEUED, State.RETRYING], next_attempt_at__lte=now)
    abandoned = Q(state=State.SENDING, claim_expires_at__lt=now)
    return waiting | abandoned


def _claim(delivery_id: int):
    """The claim's expiry when the row was ours to take, else None."""
    now = timezone.now()
    expires = now + timedelta(seconds=CLAIM_SECONDS)
    taken = WebhookDelivery.objects.filter(_due(now), pk=delivery_id).update(
        state=State.SENDING, claim_expires_at=expires, attempts=F("attempts") + 1
    )
    return expires if taken else None


def _mine(row: WebhookDelivery, claim):
    return WebhookDelivery.objects.filter(pk=row.pk, state=State.SENDING, claim_expires_at=claim)


def _failed(row: WebhookDelivery, claim, error: ProviderError) -> str:
    attempts = row.attempts  # already counts this attempt (the claim added it)
    if error.permanent or attempts >= settings.POSTROOM_WEBHOOK_MAX_ATTEMPTS:
        reason = str(error) if error.permanent else f"Gave up after {attempts} attempts: {error}"
        _mine(row, claim).update(state=State.FAILED, last_error=reason, claim_expires_at=None)
        logger.warning("webhook delivery %s failed (%s)", row.pk, error.kind)
        return State.FAILED
    wait = min(retry_delay(attempt=attempts), RETRY_MAX)
    asked = getattr(error, "retry_after", None)
    if asked:
        wait = max(wait, timedelta(seconds=asked))  # the endpoint's Retry-After wins
    _mine(row, claim).update(
        state=State.RETRYING,
        next_attempt_at=timezone.now() + wait,
        last_error=str(error),
        claim_expires_at=None,
    )
    return State.RETRYING
