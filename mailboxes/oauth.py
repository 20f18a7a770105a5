"""OAuth2 sign-in for a channel: start, finish (tokens stored encrypted), refresh.

The pending sign-in (state, PKCE verifier, channel, redirect URI) lives in the administrator's
session, is taken out once and is good for 10 minutes; providers/oauth.py does the talking.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.db import close_old_connections, transaction
from django.urls import reverse
from django.utils import timezone

from mailboxes import oauth_health
from mailboxes.metrics import TOKEN_REFRESHES
from mailboxes.models import Mailbox
from mailboxes.notify import administrators_notify
from mailboxes.outbox import outbox_resume
from mailboxes.services import mailbox_token_credentials, network_policy
from providers import oauth
from providers.config import TokenCredentials
from providers.errors import ProviderError

logger = logging.getLogger(__name__)

SESSION_KEY = "postroom_oauth_pending"
PENDING_SECONDS = 600  # the 10 minutes: a sign-in left open longer starts again
REFRESH_LEASE = timedelta(seconds=60)
# An access token with less than this left is refreshed before use: a poll or a send must not
# start with a token that dies halfway through the login.
REFRESH_MARGIN = timedelta(seconds=30)
# How long a login waits for another worker's refresh of the same channel to finish.
REFRESH_WAIT_SECONDS = 10.0
TOKEN_FIELDS = [
    "oauth_access_token",
    "oauth_refresh_token",
    "oauth_token_expires",
    "oauth_refused_at",
    "oauth_signed_in_as",
    # What credential health reads, so its "before a refresh" is the stored one.
    "oauth_signed_in_at",
    "oauth_refreshed_at",
    "oauth_rotated_at",
    "oauth_refresh_expires_at",
]
_now = time.time  # a seam: tests move the clock instead of waiting 10 minutes


class SignInError(Exception):
    """A sign-in that cannot finish, in words for the administrator."""


@dataclass(frozen=True)
class Pending:
    mailbox_id: int
    code_verifier: str
    redirect_uri: str
    created: float


def callback_url() -> str:
    """Postroom's own redirect URI, the one to register with the provider."""
    base = settings.POSTROOM_BASE_URL.rstrip("/")
    return base + reverse("admin:mailboxes_mailbox_oauth_callback")


def mailbox_redirect_uri(*, mailbox: Mailbox) -> str:
    return mailbox.oauth_redirect_uri or callback_url()


def mailbox_redirects_back(*, mailbox: Mailbox) -> bool:
    """False when the provider sends the code elsewhere (seed 001's manual copy of the code)."""
    return mailbox_redirect_uri(mailbox=mailbox) == callback_url()


def mailbox_oauth_app(*, mailbox: Mailbox) -> oauth.OAuthApp:
    provider = mailbox.oauth_provider or oauth.CUSTOM
    client_id, secret = mailbox.oauth_client_id, mailbox.oauth_client_secret
    if provider in (oauth.GOOGLE, oauth.MICROSOFT) and not client_id:
        # The deployment's app (POSTROOM_GOOGLE_CLIENT_ID...) serves channels without their own.
        client_id = getattr(settings, f"POSTROOM_{provider.upper()}_CLIENT_ID")
        secret = getattr(settings, f"POSTROOM_{provider.upper()}_CLIENT_SECRET")
    return oauth.OAuthApp(
        provider=provider,
        client_id=client_id,
        client_secret=secret,
        redirect_uri=mailbox_redirect_uri(mailbox=mailbox),
        scope=mailbox.oauth_scope,
        auth_url=mailbox.oauth_auth_url,
        token_url=mailbox.oauth_token_url,
        discovery_url=mailbox.oauth_discovery_url,
        tenant=mailbox.oauth_tenant or "common",
        timeout=settings.POSTROOM_CONNECT_TIMEOUT,
    )


def mailbox_oauth_start(*, mailbox: Mailbox, session: Any) -> str:
    """The provider's sign-in URL; the state and verifier wait in the session."""
    app = mailbox_oauth_app(mailbox=mailbox)
    endpoints = oauth.endpoints_resolve(app, network_policy())
    own = "" if mailbox.oauth_shared_mailbox else mailbox.email_address
    login_hint = mailbox.oauth_login or own
    request = oauth.authorization_start(app, endpoints, login_hint=login_hint)
    pending = _pending_all(session)
    now = _now()
    # Drop what has expired, so an abandoned sign-in does not stay in the session forever.
    pending = {k: v for k, v in pending.items() if now - v["created"] < PENDING_SECONDS}
    pending[request.state] = {
        "mailbox_id": mailbox.pk,
        "code_verifier": request.code_verifier,
        "redirect_uri": app.redirect_uri,
        "created": now,
    }
    session[SESSION_KEY] = pending
    return request.url


def pending_take(*, session: Any, state: str) -> Pending:
    """The sign-in this state belongs to, removed from the session (a state works once)."""
    pending = _pending_all(session)
    entry = pending.pop(state, None) if state else None
    session[SESSION_KEY] = pending
    if entry is None:
        raise SignInError(
            "This sign-in is unknown or was already used (the state does not match one "
            "started in this browser session). Start the sign-in again from the channel page."
        )
    if _now() - entry["created"] >= PENDING_SECONDS:
        raise SignInError(
            "This sign-in was started more than 10 minutes ago and has expired. Start it "
            "again from the channel page."
        )
    return Pending(**entry)


def code_from_input(text: str) -> str:
    """The code, whether pasted alone or as the whole address the provider redirected to."""
    text = text.strip()
    if "code=" in text:
        query = dict(parse_qsl(urlsplit(text).query or text))
        return query.get("code", "").strip()
    return text


def mailbox_oauth_finish(*, mailbox: Mailbox, pending: Pending, code: str) -> oauth.TokenSet:
    """Exchange the code, check the account, store the tokens. Raises SignInError."""
    if pending.mailbox_id != mailbox.pk:
        raise SignInError("This sign-in was started for another channel.")
    app = mailbox_oauth_app(mailbox=mailbox)
    if app.redirect_uri != pending.redirect_uri:
        raise SignInError("The redirect URI changed during the sign-in. Start it again.")
    if not code:
        raise SignInError("No authorization code was given.")
    policy = network_policy()
    try:
        endpoints = oauth.endpoints_resolve(app, policy)
        tokens = oauth.authorization_finish(
            app, endpoints, policy, code=code, code_verifier=pending.code_verifier
        )
    except ProviderError as err:
        raise SignInError(str(err)) from err
    _check_account(mailbox, tokens.signed_in_as)
    mailbox_oauth_store(mailbox=mailbox, tokens=tokens, signed_in=True)
    logger.info("channel %s: OAuth2 sign-in stored", mailbox.channel_id)
    _resume_after_sign_in(mailbox)
    return tokens


def _resume_after_sign_in(mailbox: Mailbox) -> None:
    """A new sign-in ends the pause a refused one started: poll at once, send what waited."""
    Mailbox.objects.filter(pk=mailbox.pk).update(next_poll_at=timezone.now())
    if mailbox.outbox_paused:
        outbox_resume(mailbox=mailbox)


def mailbox_oauth_store(*, mailbox: Mailbox, tokens: oauth.TokenSet, signed_in: bool) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {
        "oauth_access_token": tokens.access_token,
        "oauth_refresh_token": tokens.refresh_token,
        "oauth_token_expires": tokens.expires_at.isoformat() if tokens.expires_at else "",
        "oauth_refreshed_at": now,
    }
    if tokens.scope:
        fields["oauth_scopes"] = tokens.scope
    if signed_in:
        fields.update(
            oauth_signed_in_as=tokens.signed_in_as, oauth_signed_in_at=now, oauth_refused_at=None
        )
    if tokens.rotated:
        fields["oauth_rotated_at"] = now
    # The refresh token's end, when the provider says it (Google "Testing" apps). A sign-in or
    # a rotation brings a new token, whose end is what this answer says (or unknown); a refresh
    # that keeps the token and says nothing leaves the known end as it is.
    if tokens.refresh_expires_at is not None or signed_in or tokens.rotated:
        fields["oauth_refresh_expires_at"] = tokens.refresh_expires_at
    for name, value in fields.items():
        setattr(mailbox, name, value)
    # save(update_fields) encrypts through the field; .update() would store plaintext.
    mailbox.save(update_fields=[*fields, "updated_at"])


def mailbox_oauth_refresh(*, mailbox: Mailbox) -> bool:
    """Refresh the access token unless another worker is already doing it (then False).

    The refresh lease is taken by conditional UPDATE, so two refreshes of one channel never run
    at once: with rotating refresh tokens the second would present a token the first retired.
    """
    now = timezone.now()
    taken = (
        Mailbox.objects.filter(pk=mailbox.pk)
        .exclude(oauth_refresh_lease_until__gt=now)
        .update(oauth_refresh_lease_until=now + REFRESH_LEASE)
    )
    if not taken:
        return False
    outcome = "failed"  # unless the provider answered with tokens or a refusal
    try:
        # Only the OAuth fields: the instance may carry an administrator's unsaved edits.
        mailbox.refresh_from_db(fields=TOKEN_FIELDS)
        app = mailbox_oauth_app(mailbox=mailbox)
        policy = network_policy()
        endpoints = oauth.endpoints_resolve(app, policy)
        tokens = oauth.token_refresh(
            app, endpoints, policy, refresh_token=mailbox.oauth_refresh_token
        )
        # As of the previous refresh: a warning new since then is mailed once, here, under
        # the refresh lease (no other worker can see the same change).
        before = oauth_health.credential_warnings(mailbox, mailbox.oauth_refreshed_at or now)
        mailbox_oauth_store(mailbox=mailbox, tokens=tokens, signed_in=False)
        outcome = "rotated" if tokens.rotated else "refreshed"
        _mail_new_warnings(mailbox, before)
    except oauth.SignInRefused as err:
        outcome = "refused"
        # Re-worded, so that the poll which records this error keeps "sign in again" up front.
        raise oauth.SignInRefused(mailbox_oauth_refused(mailbox=mailbox, error=err)) from err
    finally:
        TOKEN_REFRESHES.labels(outcome=outcome).inc()
        Mailbox.objects.filter(pk=mailbox.pk).update(oauth_refresh_lease_until=None)
    return True


def mailbox_access_token(*, mailbox: Mailbox, rejected_token: str = "") -> str:
    """An access token for the mail servers: the stored one while it has REFRESH_MARGIN left,
    else a refreshed one. `rejected_token` is one a server just refused: refreshed even if
    not expired, unless another worker has replaced it meanwhile.

    Raises SignInRefused while the channel waits for a new sign-in, OAuthFailed when the
    provider cannot be reached (worth retrying).
    """
    if mailbox.oauth_refused_at is not None or not mailbox.oauth_refresh_token:
        raise oauth.SignInRefused(sign_in_again_message(mailbox))
    if _usable(mailbox, rejected_token):
        return mailbox.oauth_access_token
    if not mailbox_oauth_refresh(mailbox=mailbox):
        _wait_for_refresh(mailbox)
        mailbox.refresh_from_db(fields=TOKEN_FIELDS)
        if mailbox.oauth_refused_at is not None:
            raise oauth.SignInRefused(sign_in_again_message(mailbox))
        if not _usable(mailbox, rejected_token):
            raise oauth.OAuthFailed(
                "Another worker is still refreshing this channel's access token; Postroom "
                "will retry."
            )
    return mailbox.oauth_access_token


def _usable(mailbox: Mailbox, rejected_token: str) -> bool:
    token = mailbox.oauth_access_token
    if not token or token == rejected_token:
        return False
    expires = mailbox.oauth_expires_at
    return expires is None or expires - timezone.now() > REFRESH_MARGIN


def _wait_for_refresh(mailbox: Mailbox) -> None:
    """Until the other worker's refresh lease is gone (it finished or died), a while at most."""
    deadline = time.monotonic() + REFRESH_WAIT_SECONDS
    busy = Mailbox.objects.filter(pk=mailbox.pk, oauth_refresh_lease_until__gt=timezone.now())
    while busy.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass(frozen=True)
class MailboxTokenSource:
    """Fresh token credentials for each IMAP IDLE (re)connection of one channel (the
    engine's CredentialsSource). Equal for the same channel, so that re-watching a channel
    whose token was refreshed keeps its connection."""

    mailbox_id: int

    def __call__(self, rejected_token: str = "") -> TokenCredentials:
        # Called in the engine's pool threads: their database connection must not go stale.
        close_old_connections()
        try:
            mailbox = Mailbox.objects.get(pk=self.mailbox_id)
            return mailbox_token_credentials(mailbox=mailbox, rejected_token=rejected_token)
        except Mailbox.DoesNotExist:
            raise oauth.SignInRefused("The channel was deleted.") from None
        finally:
            close_old_connections()


def sign_in_again_message(mailbox: Mailbox) -> str:
    return (
        f"Sign in again: the OAuth2 sign-in of {mailbox.email_address} no longer works. Use "
        "the sign-in button on the channel page; polling and the outbox are paused until then."
    )


def mailbox_oauth_refused(*, mailbox: Mailbox, error: ProviderError) -> str:
    """The provider refused the refresh token (revoked, password changed: seed 001).

    The channel turns red with "sign in again"; the dispatcher skips it and its outbox pauses
    until a new sign-in. The conditional UPDATE makes this happen once per refusal, so the
    administrators' mail goes once, not at every poll.
    """
    now = timezone.now()
    reason = f"{sign_in_again_message(mailbox)} ({error})"
    changed = Mailbox.objects.filter(pk=mailbox.pk, oauth_refused_at__isnull=True).update(
        oauth_refused_at=now,
        status=Mailbox.Status.ERROR,
        status_message=reason[:500],
        last_error=reason,
        last_error_at=now,
        outbox_paused=True,
        outbox_paused_reason=reason[:500],
    )
    mailbox.oauth_refused_at = mailbox.oauth_refused_at or now
    if changed:
        logger.warning("channel %s: the provider refused the refresh token", mailbox.channel_id)
        transaction.on_commit(
            lambda: administrators_notify(mailbox, "mailboxes/mail/sign_in_again")
        )
    return reason


def _mail_new_warnings(mailbox: Mailbox, before: list[oauth_health.HealthWarning]) -> None:
    after = oauth_health.credential_warnings(mailbox, timezone.now())
    appeared = oauth_health.warnings_appeared(before, after)
    if appeared:
        logger.warning(
            "channel %s: credential warning %s",
            mailbox.channel_id,
            ", ".join(warning.code for warning in appeared),
        )
        transaction.on_commit(
            lambda: administrators_notify(
                mailbox, "mailboxes/mail/credential_warning", {"warnings": appeared}
            )
        )


def _check_account(mailbox: Mailbox, signed_in_as: str) -> None:
    """Seed 003: sign in with the channel's own account (a shared mailbox: any delegate)."""
    if mailbox.oauth_shared_mailbox:
        return
    expected = (mailbox.oauth_login or mailbox.email_address).lower()
    if not signed_in_as:
        raise SignInError(
            "The provider did not say which account signed in (no email in the ID token or "
            "userinfo). Add 'openid email' to the scope."
        )
    if signed_in_as.lower() != expected:
        raise SignInError(
            f"You signed in as {signed_in_as}, but this channel is {expected}. Sign in with "
            f"{expected}; for a Microsoft 365 shared mailbox, tick 'Microsoft 365 shared "
            "mailbox' and sign in as a delegate."
        )


def _pending_all(session: Any) -> dict:
    pending = session.get(SESSION_KEY)
    return dict(pending) if isinstance(pending, dict) else {}
