"""What a channel has received: the ingestion ledger.

Every fetched message is stored here as it came (bytes) with its server identity, before
anything changes on the server. The row then records what processing made of it, so an
administrator can answer "where did that customer's email go?".
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.db import models
from django.db.models import Q

from mailboxes.models.mailbox import Mailbox


class InboundMessage(models.Model):
    class Outcome(models.TextChoices):
        PENDING = "pending", "Waiting to be processed"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"
        HELD = "held", "Held"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="inbound_messages")
    # Server identity: IMAP (UIDVALIDITY, UID) or POP3 UIDL.
    protocol = models.CharField(max_length=4, choices=Mailbox.Protocol.choices)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uid = models.BigIntegerField(null=True, blank=True)
    uidl = models.CharField("UIDL", max_length=255, blank=True)

    # Recorded, not unique: real mail repeats Message-IDs and omits them.
    message_id = models.CharField("Message-ID", max_length=255, blank=True, db_index=True)
    size = models.PositiveBigIntegerField(help_text="Bytes, as the server reported them.")
    sha256 = models.CharField(max_length=64, db_index=True)
    raw = models.BinaryField(null=True, blank=True, editable=False)
    raw_file = models.FileField(upload_to="raw/", blank=True, editable=False)
    truncated = models.BooleanField(
        default=False, help_text="Over the size cap: only the headers were kept."
    )
    server_date = models.DateTimeField(null=True, blank=True)
    # The channel's retention removed the bytes (raw and raw_file are empty since then).
    raw_purged_at = models.DateTimeField("raw mail purged at", null=True, blank=True)
    stored_at = models.DateTimeField(auto_now_add=True, db_index=True)
    server_action_done = models.BooleanField(
        default=False, help_text="The after-import action ran on the server."
    )
    # A move on a server without MOVE is a COPY, then a delete: once copied, a retry only
    # deletes, so a connection lost between the two does not leave a second copy.
    server_copied = models.BooleanField(
        default=False, help_text="Copied to the move-to folder; its removal may be pending."
    )
    # The server would not hand the message over (a FETCH answered NO or BYE, a RETR -ERR): the
    # row keeps its place in the ledger without bytes and is asked for again at later polls.
    fetch_error = models.TextField(
        blank=True, help_text="Why the server would not hand the message over; empty once read."
    )
    fetch_attempts = models.PositiveSmallIntegerField(default=0)
    fetch_retry_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When the next poll asks for it again."
    )

    # What processing made of it.
    sender = models.CharField(max_length=320, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(
        max_length=10, choices=Outcome.choices, default=Outcome.PENDING, db_index=True
    )
    outcome_reason = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="What it became.")
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "received message"
        ordering = ["-stored_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                "mailbox",
                "uidvalidity",
                "uid",
                condition=Q(uid__isnull=False),
                name="inbound_unique_imap_identity",
            ),
            models.UniqueConstraint(
                "mailbox", "uidl", condition=~Q(uidl=""), name="inbound_unique_pop3_identity"
            ),
        ]
        indexes = [models.Index(fields=["mailbox", "outcome"])]

    def __str__(self) -> str:
        return self.subject or self.message_id or f"message {self.pk}"

    @property
    def server_identity(self) -> str:
        if self.uid is not None:
            return f"UIDVALIDITY {self.uidvalidity} UID {self.uid}"
        return f"UIDL {self.uidl}"

    def raw_bytes(self) -> bytes:
        if self.raw is not None:
            return bytes(self.raw)
        with default_storage.open(self.raw_file.name, "rb") as f:
            return f.read()


class ProcessingStep(models.Model):
    """One side effect of processing, done once: replay skips steps already here."""

    message = models.ForeignKey(InboundMessage, on_delete=models.CASCADE, related_name="steps")
    step = models.CharField(max_length=50)
    done_at = models.DateTimeField(auto_now_add=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint("message", "step", name="processing_step_once"),
        ]

    def __str__(self) -> str:
        return f"{self.step} of message {self.message_id}"


class ErasedMessage(models.Model):
    """A tombstone: a message erased on request ("erase contact"). Only its hash is kept, so a
    re-fetch of the same bytes is recognised and not stored again."""

    sha256 = models.CharField(max_length=64, unique=True)
    erased_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256


class KnownUidl(models.Model):
    """A POP3 UIDL seen on the server that is not to be imported (it predates the cursor)."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="known_uidls")
    uidl = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint("mailbox", "uidl", name="known_uidl_once"),
        ]

    def __str__(self) -> str:
        return self.uidl
