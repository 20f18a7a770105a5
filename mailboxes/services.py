"""Workflows on channels: test the connection, take online/offline, rotate secrets.

Views, admin actions, tasks and commands parse input and call these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from mailboxes.fields import EncryptedTextField
from mailboxes.models import KnownUidl, Mailbox
from mailboxes.signals import poll_requested
from providers.checks import incoming_check, sendgrid_check, smtp_check
from providers.config import (
    AnyCredentials,
    Credentials,
    IncomingSettings,
    MailboxCheck,
    NetworkPolicy,
    SendGridSettings,
    ServerAddress,
    SmtpSettings,
    TokenCredentials,
)
from providers.errors import AuthenticationFailed, ProviderError

logger = logging.getLogger(__name__)
S = TypeVar("S", IncomingSettings, SmtpSettings)
T = TypeVar("T")


@dataclass
class ConnectionReport:
    """What "test connection" found: the folder's count, and errors by side."""

    check: MailboxCheck | None = None
    errors: dict[str, ProviderError] = field(default_factory=dict)  # "incoming" / "outgoing"
    notes: list[str] = field(default_factory=list)  # what was not tested, and why

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self, mailbox: Mailbox) -> str:
        if self.errors:
            return " ".join(f"{side.capitalize()}: {err}" for side, err in self.errors.items())
        parts = []
        if self.check is not None:
            parts.append(f"{self.check.message_count} messages in {mailbox.folder}.")
        if not self.notes:
            parts.append("The outgoing server accepted the login.")
        return " ".join(parts + self.notes)


def network_policy() -> NetworkPolicy:
    return NetworkPolicy.from_strings(settings.POSTROOM_BLOCKED_NETWORKS)


def mailbox_incoming_settings(*, mailbox: Mailbox, rejected_token: str = "") -> IncomingSettings:
    """Where and how to log in; for an OAuth2 channel with a fresh access token (which may
    mean a refresh now: raises SignInRefused or OAuthFailed when that fails)."""
    server = ServerAddress(
        host=mailbox.incoming_host,
        port=mailbox.incoming_port,
        security=mailbox.incoming_security,
        trust_self_signed=mailbox.trust_self_signed,
        timeout=settings.POSTROOM_CONNECT_TIMEOUT,
    )
    if mailbox.auth_type == Mailbox.AuthType.OAUTH2:
        credentials = mailbox_token_credentials(mailbox=mailbox, rejected_token=rejected_token)
    else:
        credentials = Credentials(username=mailbox.login_username, password=mailbox.password)
    return IncomingSettings(mailbox.protocol, server, credentials, folder=mailbox.folder)


def mailbox_listen_settings(*, mailbox: Mailbox) -> IncomingSettings:
    """The IMAP IDLE listener's settings: for an OAuth2 channel without a token (the listener
    asks for a fresh one at each connection), so a refresh does not look like an edit."""
    if mailbox.auth_type != Mailbox.AuthType.OAUTH2:
        return mailbox_incoming_settings(mailbox=mailbox)
    server = ServerAddress(
        host=mailbox.incoming_host,
        port=mailbox.incoming_port,
        security=mailbox.incoming_security,
        trust_self_signed=mailbox.trust_self_signed,
        timeout=settings.POSTROOM_CONNECT_TIMEOUT,
    )
    account = TokenCredentials(username=mailbox_token_username(mailbox=mailbox))
    return IncomingSettings(mailbox.protocol, server, account, folder=mailbox.folder)


def mailbox_smtp_settings(*, mailbox: Mailbox, rejected_token: str = "") -> SmtpSettings:
    server = ServerAddress(
        host=mailbox.smtp_host,
        port=mailbox.smtp_port,
        security=mailbox.smtp_security,
        trust_self_signed=mailbox.trust_self_signed,
        timeout=settings.POSTROOM_CONNECT_TIMEOUT,
    )
    credentials: AnyCredentials | None
    if mailbox.auth_type == Mailbox.AuthType.OAUTH2:
        credentials = mailbox_token_credentials(mailbox=mailbox, rejected_token=rejected_token)
    else:
        username = mailbox.smtp_username or mailbox.login_username
        password = mailbox.smtp_password or mailbox.password
        credentials = Credentials(username=username, password=password) if password else None
    return SmtpSettings(server, credentials)


def mailbox_token_credentials(*, mailbox: Mailbox, rejected_token: str = "") -> TokenCredentials:
    """XOAUTH2 logs in as the signed-in account, or for a Microsoft 365 shared mailbox as the
    channel's address (the delegate's token, the mailbox's name)."""
    # Imported here: mailboxes.oauth builds on this module (network_policy).
    from mailboxes.oauth import mailbox_access_token

    token = mailbox_access_token(mailbox=mailbox, rejected_token=rejected_token)
    return TokenCredentials(username=mailbox_token_username(mailbox=mailbox), access_token=token)


def mailbox_token_username(*, mailbox: Mailbox) -> str:
    if mailbox.oauth_shared_mailbox:
        return mailbox.email_address
    return mailbox.oauth_signed_in_as or mailbox.oauth_login or mailbox.email_address


def mailbox_with_token(*, mailbox: Mailbox, build: Callable[..., S], use: Callable[[S], T]) -> T:
    """use(build(mailbox)); when a server refuses an OAuth2 access token, once more with a
    refreshed one (the issue: "refresh before expiry and once on an authentication failure").
    A provider may end a token early (revoked sessions, a changed password)."""
    built = build(mailbox=mailbox)
    try:
        return use(built)
    except AuthenticationFailed:
        if not isinstance(built.credentials, TokenCredentials):
            raise
    rejected = built.credentials.access_token
    return use(build(mailbox=mailbox, rejected_token=rejected))


def mailbox_sendgrid_settings(*, mailbox: Mailbox) -> SendGridSettings:
    return SendGridSettings(
        api_token=mailbox.sendgrid_api_token, api_url=settings.POSTROOM_SENDGRID_API_URL
    )


def mailbox_probe(*, mailbox: Mailbox) -> ConnectionReport:
    """Log in to the channel's servers as configured (saved or not) and report; writes nothing
    but a refreshed OAuth2 token (or the refusal of one)."""
    report = ConnectionReport()
    if mailbox.auth_type == Mailbox.AuthType.OAUTH2 and not mailbox.oauth_refresh_token:
        report.notes.append("Not connected yet: OAuth2 channels connect after signing in.")
        return report
    policy = network_policy()
    if mailbox.listen:
        try:
            report.check = mailbox_with_token(
                mailbox=mailbox,
                build=mailbox_incoming_settings,
                use=lambda incoming: incoming_check(incoming, policy),
            )
        except ProviderError as err:
            report.errors["incoming"] = err
    try:
        if mailbox.server_type == Mailbox.ServerType.SENDGRID:
            sendgrid_check(mailbox_sendgrid_settings(mailbox=mailbox))
        else:
            mailbox_with_token(
                mailbox=mailbox,
                build=mailbox_smtp_settings,
                use=lambda smtp: smtp_check(smtp, policy),
            )
    except ProviderError as err:
        report.errors["outgoing"] = err
    return report


def mailbox_test_connection(*, mailbox: Mailbox) -> ConnectionReport:
    """Probe a saved channel and record the outcome on its row (status colour, count, error)."""
    report = mailbox_probe(mailbox=mailbox)
    mailbox_record_check(mailbox=mailbox, report=report)
    return report


def mailbox_record_check(*, mailbox: Mailbox, report: ConnectionReport) -> None:
    now = timezone.now()
    fields = status_fields(mailbox=mailbox, report=report, now=now)
    # .update(), not .save(): a stale instance must never overwrite an administrator's edit.
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
    for name, value in fields.items():
        setattr(mailbox, name, value)
    if report.errors:
        logger.info(
            "channel %s: connection test failed (%s)",
            mailbox.channel_id,
            ", ".join(err.kind for err in report.errors.values()),
        )


def status_fields(*, mailbox: Mailbox, report: ConnectionReport, now) -> dict:
    """Green when every tested side logged in, amber when nothing could be tested, else red."""
    fields = {"last_checked_at": now, "status_message": report.summary(mailbox)[:500]}
    if report.check is not None:
        fields["last_message_count"] = report.check.message_count
    if report.errors:
        fields.update(
            status=Mailbox.Status.ERROR, last_error=report.summary(mailbox), last_error_at=now
        )
    elif report.notes:
        fields["status"] = Mailbox.Status.WARNING
    else:
        fields["status"] = Mailbox.Status.OK
    return fields


def mailbox_set_online(*, mailbox: Mailbox, online: bool) -> ConnectionReport | None:
    """Take a channel offline at once; online only after its connection test passes."""
    if not online:
        Mailbox.objects.filter(pk=mailbox.pk).update(enabled=False)
        mailbox.enabled = False
        return None
    report = mailbox_test_connection(mailbox=mailbox)
    if report.ok:
        Mailbox.objects.filter(pk=mailbox.pk).update(enabled=True)
        mailbox.enabled = True
    return report


CURSOR_FIELDS = ("protocol", "incoming_host", "username", "folder")


def mailbox_fetch_now(*, mailbox: Mailbox) -> None:
    """Seed 000's refresh: poll this channel at once (after the current transaction commits)."""
    transaction.on_commit(lambda: poll_requested.send(sender=Mailbox, mailbox_id=mailbox.pk))


def mailbox_cursor_reset(*, mailbox: Mailbox, changed: list[str]) -> str:
    """Another server, account or folder: start "from now on" there, and say so."""
    labels = ", ".join(str(Mailbox._meta.get_field(name).verbose_name) for name in changed)
    note = f"{labels.capitalize()} changed: mail from now on will be fetched at the next poll"
    with transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(
            uidvalidity=None,
            last_uid=None,
            cursor_set_at=None,
            rescan_through_uid=None,
            cursor_note=note,
            next_poll_at=timezone.now(),
            # What to import is chosen again, from a preview of the new folder.
            first_sync=Mailbox.FirstSync.FROM_NOW,
            first_sync_days=None,
            first_sync_chosen_at=None,
        )
        Mailbox.objects.filter(
            pk=mailbox.pk,
            import_state__in=[Mailbox.ImportState.QUEUED, Mailbox.ImportState.RUNNING],
        ).update(
            import_state=Mailbox.ImportState.CANCELLED,
            import_finished_at=timezone.now(),
            import_message=f"Stopped: {labels.lower()} changed.",
        )
        KnownUidl.objects.filter(mailbox=mailbox).delete()
    mailbox_fetch_now(mailbox=mailbox)
    return note


def mailbox_delete_summary(*, mailbox: Mailbox) -> list[tuple[str, int, bool]]:
    """(what, how many, deleted with the channel?) for every kind of row that points here.

    Generic over relations, so mailboxes need not know which apps keep rows about channels.
    """
    rows = []
    for relation in Mailbox._meta.related_objects:
        manager = relation.related_model._default_manager
        count = manager.filter(**{relation.field.name: mailbox}).count()
        if count:
            name = str(relation.related_model._meta.verbose_name_plural)
            rows.append((name, count, relation.on_delete is models.CASCADE))
    return rows


def secrets_rotate() -> int:
    """Re-encrypt every stored secret under the newest key; return how many were rewritten."""
    rewritten = 0
    for model in apps.get_app_config("mailboxes").get_models():
        names = [f.name for f in model._meta.fields if isinstance(f, EncryptedTextField)]
        if not names:
            continue
        with transaction.atomic():
            for obj in model.objects.select_for_update().only("pk", *names):
                # Reading decrypted with whichever key fits; writing encrypts with the newest.
                values = {name: getattr(obj, name) for name in names if getattr(obj, name)}
                if values:
                    model.objects.filter(pk=obj.pk).update(**values)
                    rewritten += len(values)
    return rewritten
