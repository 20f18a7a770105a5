"""The outbox: every message Postroom sends is a row first, written in the same transaction as
what it belongs to, and its delivery state lives in that row (DESIGN.md, "An outbound email").
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from mailboxes.models.mailbox import Mailbox

DEFAULT_MAX_ATTEMPTS = 8


class OutboundMessage(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        RETRYING = "retrying", "Waiting to retry"
        FAILED = "failed", "Failed"
        BOUNCED = "bounced", "Bounced"

    class Kind(models.TextChoices):
        REPLY = "reply", "Reply"
        ACKNOWLEDGEMENT = "ack", "Acknowledgement"
        NOTIFICATION = "notification", "Notification"
        TEST = "test", "Test mail"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="outbound")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.REPLY)
    # The message is built once, at enqueue: a resend after a crash sends the same bytes with
    # the same Message-ID, so the recipient's client recognises a duplicate.
    message_id = models.CharField("Message-ID", max_length=255, db_index=True)
    mail_from = models.EmailField("envelope sender")
    recipients = models.JSONField(default=list)
    subject = models.CharField(max_length=500, blank=True)
    raw = models.BinaryField(editable=False)

    state = models.CharField(
        max_length=10, choices=State.choices, default=State.QUEUED, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=DEFAULT_MAX_ATTEMPTS)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    server_reply = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # A delivery report (DSN) about this message arrived: when, and what it said.
    bounced_at = models.DateTimeField(null=True, blank=True)
    bounce_text = models.TextField(blank=True)
    copied_to_sent = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "outgoing message"
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["mailbox", "state", "next_attempt_at"])]

    def __str__(self) -> str:
        return self.subject or self.message_id
