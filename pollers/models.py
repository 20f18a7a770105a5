"""Scheduling state that only pollers reads: sending slots per channel."""

from __future__ import annotations

from django.db import models

from mailboxes.models import Mailbox


class SendSlot(models.Model):
    """One of the few SMTP sessions a channel may hold at once, leased like a poll.

    Providers limit concurrent connections per account; a slot is taken by conditional UPDATE
    and expires if its worker dies.
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    number = models.PositiveSmallIntegerField()
    owner = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint("mailbox", "number", name="send_slot_once"),
        ]

    def __str__(self) -> str:
        return f"slot {self.number} of channel {self.mailbox_id}"


class IdleListener(models.Model):
    """A running `manage.py listen` process, so each can take its fair share of the channels.

    It writes `seen_at` every few seconds; one not seen within a lease is presumed dead, and
    the others divide its channels once their leases (on the mailbox rows) expire.
    """

    owner = models.CharField(max_length=64, unique=True)
    host = models.CharField(max_length=253, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"listener {self.host}:{self.pid}"


class Heartbeat(models.Model):
    """A process that runs on a schedule says it ran: /healthz reports how long ago.

    "beat" is stamped by a task beat sends every 30 s, so its age covers beat, the broker
    and the workers together.
    """

    name = models.CharField(max_length=50, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} seen at {self.seen_at:%Y-%m-%d %H:%M:%S}"
