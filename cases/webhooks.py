"""The webhook flow's deliveries: the JSON summary of an email, fixed when it is processed.

The body is written on a WebhookDelivery row inside the pipeline's transaction, so it commits
with the ledger's outcome or not at all. Sending happens after commit, in a worker (pollers
listens to `webhook_requested`); docs/webhooks.md documents the schema.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, WebhookDelivery

# parse._addresses is the parser's own reading of one header (bad headers degrade to a search).
from cases.parse import ParsedMail
from cases.parse import _addresses as header_addresses
from cases.services import Incoming

SCHEMA = "postroom.email.v1"
EVENT = "email.received"

# Sent after commit when a delivery is due at once. Arguments: delivery_id.
webhook_requested = Signal()


def webhook_enqueue(*, incoming: Incoming, case: Case | None) -> WebhookDelivery | None:
    """The delivery for this message, made once; None when the channel has no webhook URL."""
    mailbox = incoming.mailbox
    if not mailbox.webhook_url:
        return None
    existing = WebhookDelivery.objects.filter(inbound=incoming.message).first()
    if existing is not None:
        return existing
    row = WebhookDelivery.objects.create(
        mailbox=mailbox,
        inbound=incoming.message,
        url=mailbox.webhook_url,
        body="",
        next_attempt_at=timezone.now(),
    )
    row.body = json.dumps(webhook_payload(incoming=incoming, case=case, delivery=row))
    WebhookDelivery.objects.filter(pk=row.pk).update(body=row.body)
    _request_on_commit([row.pk])
    return row


def webhook_retry_now(*, delivery_ids: list[int]) -> int:
    """The admin's "retry now": failed or waiting deliveries are due again, attempts anew."""
    State = WebhookDelivery.State
    count = WebhookDelivery.objects.filter(
        pk__in=delivery_ids, state__in=[State.FAILED, State.RETRYING, State.QUEUED]
    ).update(state=State.QUEUED, next_attempt_at=timezone.now(), attempts=0)
    _request_on_commit(delivery_ids)
    return count


def _request_on_commit(delivery_ids: list[int]) -> None:
    def send() -> None:
        for delivery_id in delivery_ids:
            webhook_requested.send(sender=WebhookDelivery, delivery_id=delivery_id)

    transaction.on_commit(send)


def webhook_payload(*, incoming: Incoming, case: Case | None, delivery: WebhookDelivery) -> dict:
    mailbox, parsed = incoming.mailbox, incoming.parsed
    return {
        "schema": SCHEMA,
        "event": EVENT,
        "delivery_id": str(delivery.pk),
        "created_at": timezone.now().isoformat(),
        "channel": {
            "id": mailbox.channel_id,
            "name": mailbox.name,
            "address": mailbox.email_address,
        },
        "message": _message(incoming.message.pk, parsed),
        "case": _case(case),
    }


def _message(message_pk: int, parsed: ParsedMail) -> dict:
    return {
        "id": message_pk,
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "from": {"address": parsed.sender, "name": parsed.sender_name},
        "reply_to": parsed.reply_to,
        "to": header_addresses(parsed.message, "To"),
        "cc": header_addresses(parsed.message, "Cc"),
        "subject": parsed.subject,
        "date": parsed.date.isoformat(),
        "text": parsed.text,
        "automatic": parsed.automatic,
        "attachments": [
            {
                "filename": part.filename,
                "content_type": part.content_type,
                "size": len(part.data),
                "inline": part.inline,
            }
            for part in parsed.attachments
        ],
    }


def _case(case: Case | None) -> dict | None:
    if case is None:
        return None
    path = reverse("cases:detail", args=[case.pk])
    return {
        "id": case.pk,
        "reference": case.reference,
        "subject": case.subject,
        "url": settings.POSTROOM_BASE_URL.rstrip("/") + path,
    }
