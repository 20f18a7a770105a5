"""One email channel (Mailbox) and its aliases.

Fields follow the five product pages in shared/seeds: identity and listen (000, 002, 003),
incoming and outgoing servers (000, 004), authentication (001, 002), handling and filtering (001),
the flow (002), status (003). Secrets are EncryptedTextFields and never leave through a form.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower

from mailboxes.fields import EncryptedTextField

MIN_REFRESH_SECONDS = 30
DEFAULT_REFRESH_SECONDS = 60
DEFAULT_MAX_MESSAGE_BYTES = 25 * 2**20
DEFAULT_END_OF_MESSAGE_MARKER = "##- Please type your reply above this line -##"
PORT_VALIDATORS = [MinValueValidator(1), MaxValueValidator(65535)]
MIN_ROUND_TRIP_INTERVAL = 300
DEFAULT_ROUND_TRIP_INTERVAL = 1800
MIN_ROUND_TRIP_LIMIT = 60
DEFAULT_ROUND_TRIP_LIMIT = 600


def new_channel_id() -> str:
    """A short, stable, unguessable public id, e.g. "em-3kq9zt7w2d"."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    return "em-" + "".join(secrets.choice(alphabet) for _ in range(10))


class Security(models.TextChoices):
    NONE = "none", "None (plain text)"
    STARTTLS = "starttls", "STARTTLS"
    SSL = "ssl", "SSL/TLS"


class Mailbox(models.Model):
    class Protocol(models.TextChoices):
        IMAP = "imap", "IMAP"
        POP3 = "pop3", "POP3"

    class ServerType(models.TextChoices):
        SMTP = "smtp", "SMTP"
        SENDGRID = "sendgrid", "SendGrid"

    class AuthType(models.TextChoices):
        BASIC = "basic", "Basic (password)"
        OAUTH2 = "oauth2", "OAuth2"

    class OAuthProvider(models.TextChoices):
        GOOGLE = "google", "Google"
        MICROSOFT = "microsoft", "Microsoft"
        CUSTOM = "custom", "Custom / OpenID provider"

    class GrantType(models.TextChoices):
        AUTHORIZATION_CODE = "authorization_code", "Authorization Code"

    class AfterImport(models.TextChoices):
        LEAVE = "leave", "Leave on the server"
        SEEN = "seen", "Mark as read (IMAP)"
        MOVE = "move", "Move to a folder (IMAP)"
        DELETE = "delete", "Delete from the server"

    class FirstSync(models.TextChoices):
        FROM_NOW = "from_now", "Only mail from now on"
        DAYS = "days", "The last N days"
        EVERYTHING = "everything", "Everything in the folder"

    class ImportState(models.TextChoices):
        NONE = "", "No import"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    class PushState(models.TextChoices):
        NONE = "", "Not listened to"
        PUSH = "push", "Push (IMAP IDLE)"
        POLLING = "polling", "Polling"

    class PushReason(models.TextChoices):
        """Why a channel a listener held is polling instead of on push."""

        NONE = "", "-"
        UNSUPPORTED = "unsupported", "The server does not offer IMAP IDLE"
        ERROR = "error", "The IDLE connection failed; reconnecting"
        GAVE_UP = "gave_up", "IDLE kept failing; retrying slowly"
        STOPPED = "stopped", "No listener holds the channel"

    class Status(models.TextChoices):
        UNCHECKED = "unchecked", "Not checked"
        OK = "ok", "Working"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    class RoundTrip(models.TextChoices):
        """What the round-trip probe last found (issue 11)."""

        NONE = "", "Not run yet"
        OK = "ok", "Arriving"
        LATE = "late", "Missed"  # amber
        FAILING = "failing", "Failing"  # red: missed again and again

    # Identity
    name = models.CharField(max_length=100, unique=True)
    channel_id = models.CharField(
        "channel ID", max_length=20, unique=True, default=new_channel_id, editable=False
    )
    description = models.TextField(blank=True)
    enabled = models.BooleanField(
        "online", default=True, help_text="Untick to take the channel offline without deleting it."
    )
    email_address = models.EmailField("email address", max_length=254)
    from_name = models.CharField(
        "from name", max_length=100, blank=True, help_text="Display name customers see."
    )
    reply_to = models.EmailField("reply-to address", blank=True)
    preset = models.CharField(max_length=20, blank=True, default="generic")

    # Incoming
    listen = models.BooleanField(
        "receive emails",
        default=True,
        help_text="Untick for an outbound-only channel: no incoming server is needed.",
    )
    protocol = models.CharField(max_length=4, choices=Protocol.choices, default=Protocol.IMAP)
    incoming_host = models.CharField("incoming host", max_length=253, blank=True)
    incoming_port = models.PositiveIntegerField(
        "incoming port", null=True, blank=True, validators=PORT_VALIDATORS
    )
    incoming_security = models.CharField(
        "incoming security", max_length=8, choices=Security.choices, default=Security.SSL
    )
    username = models.CharField(
        max_length=254, blank=True, help_text="Defaults to the email address."
    )
    password = EncryptedTextField(help_text="An app password works where 2-step sign-in is on.")
    folder = models.CharField("mailbox folder", max_length=200, default="INBOX")
    sent_folder = models.CharField(
        "sent folder name",
        max_length=200,
        blank=True,
        default="Sent",
        help_text="IMAP only. Gmail files sent mail itself in [Gmail]/Sent Mail.",
    )
    copy_to_sent = models.BooleanField(
        "copy sent mail to the sent folder",
        default=True,
        help_text="Off for providers that file sent mail themselves (Gmail, Microsoft).",
    )
    refresh_interval = models.PositiveIntegerField(
        "refresh interval (seconds)",
        default=DEFAULT_REFRESH_SECONDS,
        validators=[MinValueValidator(MIN_REFRESH_SECONDS)],
    )
    after_import = models.CharField(
        "after import",
        max_length=8,
        choices=AfterImport.choices,
        default=AfterImport.LEAVE,
        help_text="What happens on the server once a message is safely stored in Postroom.",
    )
    move_to_folder = models.CharField(
        "move to folder", max_length=200, blank=True, help_text="IMAP: where imported mail goes."
    )
    max_message_size = models.PositiveIntegerField(
        "size cap (bytes)",
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help_text="Larger messages are kept as headers plus a note, never dropped.",
    )
    trust_self_signed = models.BooleanField(
        "trust a self-signed certificate",
        default=False,
        help_text="Only for servers you control: the certificate is then not verified.",
    )

    # Outgoing
    server_type = models.CharField(
        "outgoing server type", max_length=8, choices=ServerType.choices, default=ServerType.SMTP
    )
    smtp_host = models.CharField("SMTP host", max_length=253, blank=True)
    smtp_port = models.PositiveIntegerField(
        "SMTP port", null=True, blank=True, validators=PORT_VALIDATORS
    )
    smtp_security = models.CharField(
        "SMTP security", max_length=8, choices=Security.choices, default=Security.STARTTLS
    )
    smtp_username = models.CharField(
        "SMTP username", max_length=254, blank=True, help_text="Defaults to the incoming username."
    )
    smtp_password = EncryptedTextField(
        "SMTP password", help_text="Leave empty to use the incoming password."
    )
    sendgrid_api_token = EncryptedTextField("SendGrid API token")

    # Authentication
    auth_type = models.CharField(
        "authentication type", max_length=8, choices=AuthType.choices, default=AuthType.BASIC
    )
    oauth_provider = models.CharField(
        "OAuth provider", max_length=10, choices=OAuthProvider.choices, blank=True
    )
    oauth_client_id = models.CharField(
        "client ID",
        max_length=255,
        blank=True,
        help_text="Google and Microsoft: leave empty to use the deployment's app.",
    )
    oauth_client_secret = EncryptedTextField("client secret")
    oauth_scope = models.CharField("scope", max_length=500, blank=True)
    oauth_grant_type = models.CharField(
        "grant type",
        max_length=20,
        choices=GrantType.choices,
        default=GrantType.AUTHORIZATION_CODE,
    )
    oauth_auth_url = models.URLField("auth URL", max_length=500, blank=True)
    oauth_token_url = models.URLField("access token URL", max_length=500, blank=True)
    oauth_redirect_uri = models.URLField(
        "redirect URI",
        max_length=500,
        blank=True,
        help_text="Leave empty to use Postroom's own callback.",
    )
    oauth_discovery_url = models.URLField(
        "discovery URL",
        max_length=500,
        blank=True,
        help_text="OpenID Connect discovery document, e.g. https://…/.well-known/openid-configuration",
    )
    oauth_login = models.CharField(
        "login",
        max_length=254,
        blank=True,
        help_text="The account that signs in; defaults to the email address.",
    )
    oauth_tenant = models.CharField(
        "Microsoft tenant",
        max_length=100,
        blank=True,
        default="common",
        help_text="common, organizations, or your tenant ID.",
    )
    oauth_shared_mailbox = models.BooleanField(
        "Microsoft 365 shared mailbox",
        default=False,
        help_text="A delegate signs in; Postroom then logs in as the channel's address.",
    )

    # OAuth2 tokens from the sign-in (issue 10): encrypted, never in a form. The expiry is
    # ISO 8601 text so that it too is encrypted (see oauth_expires_at).
    oauth_access_token = EncryptedTextField(editable=False)
    oauth_refresh_token = EncryptedTextField(editable=False)
    oauth_token_expires = EncryptedTextField(editable=False)
    oauth_scopes = EncryptedTextField("granted scopes", editable=False)
    oauth_signed_in_as = models.CharField("signed in as", max_length=254, blank=True)
    oauth_signed_in_at = models.DateTimeField("signed in at", null=True, blank=True)
    oauth_refreshed_at = models.DateTimeField("token last refreshed", null=True, blank=True)
    oauth_rotated_at = models.DateTimeField("refresh token last rotated", null=True, blank=True)
    # One refresh per channel at a time: taken by conditional UPDATE, expires if its holder dies.
    oauth_refresh_lease_until = models.DateTimeField(null=True, blank=True)
    # Set when the provider refused the refresh token: "sign in again". Polling and the outbox
    # stop until an administrator signs in; administrators were mailed once, when it was set.
    oauth_refused_at = models.DateTimeField("sign-in refused at", null=True, blank=True)
    # Google apps in "testing" mode hand out refresh tokens that die after 7 days; the token
    # response says so in refresh_token_expires_in. Null: the provider gave no end.
    oauth_refresh_expires_at = models.DateTimeField(
        "refresh token expires", null=True, blank=True, editable=False
    )

    # Agents (issue 9): who may see this channel's cases. Administrators see every channel.
    agent_groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="mailboxes",
        verbose_name="agent groups",
        help_text="Agents in these groups see and answer this channel's cases.",
    )

    # Email handling (seed 001)
    case_response_template = models.TextField(
        "case response template",
        blank=True,
        help_text="Wraps an agent's reply. Django template language: {{ reply }}, {{ case }}, "
        "{{ contact }}, {{ agent }}, {{ channel }}.",
    )
    attachments_allowed = models.BooleanField(
        "attachments", default=True, help_text="Keep up to 5 attachments per message."
    )
    process_task_replies = models.BooleanField(
        "process task replies",
        default=False,
        help_text="Replies to a task-assignment mail go into the task's history, not the case.",
    )
    end_of_message_marker = models.CharField(
        "end of message marker",
        max_length=200,
        blank=True,
        default=DEFAULT_END_OF_MESSAGE_MARKER,
        help_text="Shown at the top of mail Postroom sends; replies are cut above it.",
    )

    # Email filtering (seed 001)
    allow_new_case = models.BooleanField(
        "allow new case to be created",
        default=True,
        help_text="Untick to accept only replies to existing cases.",
    )
    auto_ack_template = models.TextField(
        "auto acknowledgement template",
        blank=True,
        help_text="Sent once per new case. Empty: no acknowledgement.",
    )
    refusal_template = models.TextField(
        "refusal template",
        blank=True,
        help_text="Sent to a sender whose mail cannot open a case because new cases are off. "
        "Empty: a built-in text.",
    )
    size_notice_template = models.TextField(
        "size notice template",
        blank=True,
        help_text="Sent when a message was too large to keep whole. Empty: a built-in text.",
    )
    sender_filter = models.TextField(
        "sender email address filter",
        blank=True,
        help_text="One rule per line: an address, @domain or pattern (*@example.com). "
        "Prefix with ! to refuse. With any allow rule, other senders are refused.",
    )
    confirm_unknown_senders = models.BooleanField(
        "confirm unknown senders (prevent spam)",
        default=False,
        help_text="Ask unknown senders to confirm they are a person before a case is created.",
    )
    create_contact_for_unknown = models.BooleanField(
        "create new contact for unknown senders", default=True
    )
    flow = models.CharField(
        "flow",
        max_length=50,
        default="create_case",
        help_text="What happens to each received email.",
    )
    webhook_url = models.URLField(
        "webhook URL",
        max_length=500,
        blank=True,
        help_text="The webhook flow POSTs a JSON summary of each email here.",
    )
    # Signs the webhook's body (HMAC-SHA256); encrypted, never shown back.
    webhook_secret = EncryptedTextField("webhook secret")

    # Data kept (issue 8): raw mail and attachment files older than this are purged; cases and
    # their text stay. Empty keeps everything.
    retention_days = models.PositiveIntegerField(
        "keep raw mail and files for (days)",
        null=True,
        blank=True,
        help_text="Raw mail and attachment files older than this are deleted; cases and their "
        "text stay. Empty: keep forever.",
    )

    # Status (seed 003: grey / green / amber / red)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNCHECKED)
    status_message = models.CharField(max_length=500, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_message_count = models.PositiveIntegerField(null=True, blank=True)

    # Polling: the dispatcher claims rows whose next poll is due; a lease keeps polls of one
    # channel from overlapping; "poll again" records a wake-up that found the lease held.
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    poll_again = models.BooleanField(default=False)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_poll_stored = models.PositiveIntegerField(null=True, blank=True)
    last_poll_duration_ms = models.PositiveIntegerField(null=True, blank=True)

    # Push (IMAP IDLE): which listener process holds the channel (a lease of its own, renewed
    # while it listens), and what the channel is on now, since when and why.
    idle_lease_owner = models.CharField(max_length=64, blank=True)
    idle_lease_expires_at = models.DateTimeField(null=True, blank=True)
    push_state = models.CharField(
        max_length=8, choices=PushState.choices, default=PushState.NONE, blank=True
    )
    push_reason = models.CharField(
        max_length=12, choices=PushReason.choices, default=PushReason.NONE, blank=True
    )
    push_since = models.DateTimeField(null=True, blank=True)
    push_detail = models.CharField(max_length=500, blank=True)

    # Cursor: where "new mail" starts. Empty means "not connected yet": the next poll sets it to
    # the folder's present end, so connecting never imports (or deletes) years of history.
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(null=True, blank=True)
    cursor_set_at = models.DateTimeField(null=True, blank=True)
    cursor_note = models.CharField(max_length=300, blank=True)
    # After a UIDVALIDITY change, UIDs up to here are checked against what is already stored.
    rescan_through_uid = models.BigIntegerField(null=True, blank=True)

    # First sync (older mail): what the administrator chose from the folder preview, and how
    # far the background import has come. It has a lease of its own, so polls of new mail run
    # beside it and are never delayed behind it.
    first_sync = models.CharField(
        max_length=10, choices=FirstSync.choices, default=FirstSync.FROM_NOW
    )
    first_sync_days = models.PositiveIntegerField(null=True, blank=True)
    # Empty until the administrator chooses from the preview; a new folder empties it again.
    first_sync_chosen_at = models.DateTimeField(null=True, blank=True)
    import_state = models.CharField(
        max_length=10, choices=ImportState.choices, default=ImportState.NONE, blank=True
    )
    import_total = models.PositiveIntegerField(null=True, blank=True)
    import_done = models.PositiveIntegerField(default=0)  # looked at, imported or skipped
    import_skipped = models.PositiveIntegerField(default=0)  # POP3: dated before the window
    import_through_uid = models.BigIntegerField(null=True, blank=True)
    import_last_uid = models.BigIntegerField(default=0)
    import_started_at = models.DateTimeField(null=True, blank=True)
    import_finished_at = models.DateTimeField(null=True, blank=True)
    import_message = models.CharField(max_length=500, blank=True)
    import_lease_owner = models.CharField(max_length=64, blank=True)
    import_lease_expires_at = models.DateTimeField(null=True, blank=True)

    # Outbox: paused when the outgoing server refuses the login, instead of failing every
    # queued reply; resumed by the administrator once the credentials are fixed.
    outbox_paused = models.BooleanField(default=False)
    outbox_paused_reason = models.CharField(max_length=500, blank=True)

    # Round-trip probe (issue 11): now and then the channel mails itself and waits for the
    # mail to come back in; the in-flight probe is the one sent at `round_trip_sent_at`.
    round_trip_enabled = models.BooleanField(
        "send round-trip probes",
        default=False,
        help_text="Mail the channel's own address now and then and check that the mail comes "
        "back in. The probe is removed from the server and never becomes a case.",
    )
    round_trip_interval = models.PositiveIntegerField(
        "probe every (seconds)",
        default=DEFAULT_ROUND_TRIP_INTERVAL,
        validators=[MinValueValidator(MIN_ROUND_TRIP_INTERVAL)],
    )
    round_trip_limit = models.PositiveIntegerField(
        "probe must arrive within (seconds)",
        default=DEFAULT_ROUND_TRIP_LIMIT,
        validators=[MinValueValidator(MIN_ROUND_TRIP_LIMIT)],
        help_text="Include the refresh interval: a polled channel sees the probe at its next poll.",
    )
    round_trip_next_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    round_trip_state = models.CharField(
        "round trip", max_length=8, choices=RoundTrip.choices, blank=True, editable=False
    )
    round_trip_last_ms = models.PositiveIntegerField(
        "last round trip (ms)", null=True, blank=True, editable=False
    )
    round_trip_last_ok_at = models.DateTimeField(
        "last probe arrived at", null=True, blank=True, editable=False
    )
    round_trip_failures = models.PositiveIntegerField(
        "probes missed in a row", default=0, editable=False
    )
    round_trip_detail = models.CharField(
        "round-trip detail", max_length=500, blank=True, editable=False
    )
    round_trip_sent_at = models.DateTimeField(
        "probe in flight since", null=True, blank=True, editable=False
    )
    round_trip_deadline = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    # Administrators are mailed once when the probe turns red; cleared when it arrives again.
    round_trip_alerted_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "email channel"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("email_address"), name="mailbox_unique_address"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def login_username(self) -> str:
        return self.username or self.email_address

    @property
    def oauth_expires_at(self) -> datetime | None:
        expires = self.oauth_token_expires
        return datetime.fromisoformat(expires) if expires else None

    @property
    def oauth_connected(self) -> bool:
        return bool(self.oauth_refresh_token)

    @property
    def is_polled(self) -> bool:
        return self.enabled and self.listen

    @property
    def health(self) -> str:
        probe = self.round_trip_state if self.round_trip_enabled else self.RoundTrip.NONE
        return self.colour(self.status, probe)

    @classmethod
    def colour(cls, status: str, round_trip_state: str) -> str:
        """The channel's colour: its status, made worse by a round-trip probe gone missing
        (a poll that logs in fine says nothing about mail actually arriving)."""
        if round_trip_state == cls.RoundTrip.FAILING:
            return cls.Status.ERROR
        if round_trip_state == cls.RoundTrip.LATE and status != cls.Status.ERROR:
            return cls.Status.WARNING
        return status

    def on_push(self, now: datetime) -> bool:
        """A listener has an IDLE running on it and still renews its hold."""
        return (
            self.push_state == self.PushState.PUSH
            and self.idle_lease_expires_at is not None
            and self.idle_lease_expires_at > now
        )


class Alias(models.Model):
    """Another address and display name a channel may send from (seed 000)."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="aliases")
    address = models.EmailField("alias address")
    display_name = models.CharField("alias name", max_length=100, blank=True)

    class Meta:
        verbose_name_plural = "aliases"
        ordering = ["address"]
        constraints = [
            models.UniqueConstraint(
                "mailbox", Lower("address"), name="alias_unique_address_per_mailbox"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} <{self.address}>" if self.display_name else self.address
