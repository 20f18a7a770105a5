"""What agents work with: contacts, their cases, the messages of each case and their files.

A case is a conversation between one channel and one customer address. Everything else in the
thread (who else took part, why each message joined) is recorded so an agent can see it and
threading can be checked against it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from mailboxes.models import InboundMessage, Mailbox, OutboundMessage


class Contact(models.Model):
    address = models.CharField("email address", max_length=320)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["address"]
        constraints = [
            models.UniqueConstraint(Lower("address"), name="contact_unique_address"),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


class Case(models.Model):
    class State(models.TextChoices):
        NEW = "new", "New"
        OPEN = "open", "Open"
        PENDING = "pending", "Pending"  # waiting on the customer
        SOLVED = "solved", "Solved"

    # PROTECT: deleting a channel must not take its customers' history with it; take the
    # channel offline instead.
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="cases")
    contact = models.ForeignKey(
        Contact, on_delete=models.PROTECT, null=True, blank=True, related_name="cases"
    )
    # The customer address the case is with: threading is scoped by it, with or without a
    # Contact row ("create new contact" may be off).
    address = models.CharField("customer address", max_length=320, db_index=True)
    subject = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.NEW)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_cases",
    )
    # A merged case keeps its messages' history here; its messages move to the target.
    merged_into = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="merged_cases"
    )
    # The newest message's time, kept on the row so the case list sorts without a join.
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["mailbox", "state", "-last_message_at"], name="case_list_by_channel"
            ),
        ]

    def __str__(self) -> str:
        return f"[#{self.reference}] {self.subject}"

    @property
    def reference(self) -> str:
        """The number customers see in subjects as [#1234]."""
        return str(self.pk)


class CaseParticipant(models.Model):
    """An address that takes part in a case: the customer, whoever wrote in it, whoever a
    message of it was openly addressed to. A subject's [#ref] and a reply's headers only join
    a case the sender takes part in."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="participants")
    address = models.CharField(max_length=320)

    class Meta:
        constraints = [
            models.UniqueConstraint("case", Lower("address"), name="participant_once_per_case"),
        ]
        indexes = [models.Index(Lower("address"), name="participant_address")]

    def __str__(self) -> str:
        return self.address


class CaseMessage(models.Model):
    class Direction(models.TextChoices):
        IN = "in", "Received"
        OUT = "out", "Sent"

    class JoinedBy(models.TextChoices):
        NEW = "new", "Started the case"
        IN_REPLY_TO = "in-reply-to", "In-Reply-To header"
        REFERENCES = "references", "References header"
        SUBJECT = "subject", "Case reference in the subject"
        POSTROOM = "postroom", "Sent by Postroom"
        BOUNCE = "bounce", "Delivery report for a sent message"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    inbound = models.OneToOneField(
        InboundMessage,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="case_message",
    )
    outbound = models.OneToOneField(
        OutboundMessage,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="case_message",
    )
    message_id = models.CharField("Message-ID", max_length=255, blank=True, db_index=True)
    sender = models.CharField(max_length=320, blank=True)
    sender_name = models.CharField(max_length=200, blank=True)
    recipients = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    date = models.DateTimeField(help_text="The Date header, or the arrival time without one.")
    text = models.TextField("new text", blank=True, help_text="Quoted history removed.")
    full_text = models.TextField(blank=True, help_text="The text as it came.")
    html = models.TextField("sanitised HTML", blank=True)
    joined_by = models.CharField(max_length=12, choices=JoinedBy.choices)
    joined_detail = models.CharField(max_length=300, blank=True)
    automatic = models.CharField(
        max_length=200, blank=True, help_text="Why the message looks written by a machine."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["date", "pk"]
        permissions = [("view_raw_message", "Can view a message's raw mail")]

    def __str__(self) -> str:
        return self.subject or self.message_id or f"message {self.pk}"


class CaseEvent(models.Model):
    """What an agent did to a case and why: the case's audit trail."""

    class Kind(models.TextChoices):
        STATE = "state", "Status changed"
        ASSIGN = "assign", "Assigned"
        SPLIT = "split", "Message split out"
        MERGE = "merge", "Merged"
        TASK = "task", "Task"
        NOTE = "note", "Note"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    detail = models.CharField(max_length=500, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.detail}"


class Task(models.Model):
    """Seed 001: work on a case assigned to an agent with an assignment mail. With "process
    task replies" on, a reply to that mail joins the task's history, not the case thread."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Done"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_tasks",
    )
    # Where the assignment mail went (the assignee's address, or another person's).
    assignee_address = models.CharField(max_length=320, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    assignment = models.ForeignKey(
        OutboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The assignment mail's Message-ID: a reply naming it in In-Reply-To or References is a
    # task reply.
    assignment_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.title


class TaskEntry(models.Model):
    """One line of a task's history: created, assignment mailed, a reply, a note, done."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        MAILED = "mailed", "Assignment mailed"
        REPLY = "reply", "Reply"
        NOTE = "note", "Note"
        DONE = "done", "Done"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    inbound = models.OneToOneField(
        InboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="task_entry"
    )
    author = models.CharField(max_length=320, blank=True)
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name_plural = "task entries"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.task}"


class QueueItem(models.Model):
    """The "inbound task queue" flow (seed 002): an email waits here until an agent of the
    channel picks it, which opens a case assigned to them."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting"
        TAKEN = "taken", "Taken"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="queue_items")
    inbound = models.OneToOneField(
        InboundMessage, on_delete=models.CASCADE, related_name="queue_item"
    )
    # A follow-up (it answers a message still waiting): not offered on its own; taking the
    # item it follows takes it too, into the same case.
    follows = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="follow_ups"
    )
    sender = models.CharField(max_length=320, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.WAITING, db_index=True
    )
    taken_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    taken_at = models.DateTimeField(null=True, blank=True)
    case = models.ForeignKey(
        Case, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.subject or f"queued message {self.pk}"


class Attachment(models.Model):
    message = models.ForeignKey(CaseMessage, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    content_id = models.CharField(max_length=255, blank=True, help_text="Inline images: cid.")
    file = models.FileField(upload_to="attachments/%Y/%m/", max_length=300, blank=True)
    kept = models.BooleanField(default=True)
    not_kept_reason = models.CharField(max_length=200, blank=True)
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="The channel's retention deleted the file."
    )

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.filename


class AutoReply(models.Model):
    """An automatic mail Postroom sent (acknowledgement, refusal…), counted per address so a
    sender gets at most a few an hour whatever loops around it."""

    class Kind(models.TextChoices):
        ACKNOWLEDGEMENT = "ack", "Acknowledgement"
        REFUSAL = "refusal", "Refusal"
        CONFIRMATION = "confirm", "Confirmation request"
        SIZE_NOTICE = "size", "Size notice"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="auto_replies")
    address = models.CharField(max_length=320)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    outbound = models.ForeignKey(
        OutboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sent_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(Lower("address"), "sent_at", name="auto_reply_address_time")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.address}"


class Confirmation(models.Model):
    """An unknown sender's held message, waiting for them to confirm they are a person.

    Only a hash of the token is stored: the link in the mail is the one secret. It is used
    once (a conditional UPDATE sets `confirmed_at`), and never by a GET.
    """

    inbound = models.OneToOneField(
        InboundMessage, on_delete=models.CASCADE, related_name="confirmation"
    )
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    address = models.CharField(max_length=320)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Confirmation for {self.address}"


class WebhookDelivery(models.Model):
    """One POST of the webhook flow: its body is fixed when the message is processed, and it is
    retried with backoff until the endpoint accepts it or the attempts run out."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        RETRYING = "retrying", "Waiting to retry"
        FAILED = "failed", "Failed"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    inbound = models.ForeignKey(
        InboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    url = models.URLField(max_length=500)
    body = models.TextField(help_text="The JSON sent, exactly as signed.")
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.QUEUED, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Webhook {self.pk} to {self.url}"
