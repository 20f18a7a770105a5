"""Credential health of an OAuth2 channel, read from its columns at a given time.

What the channel page says about the tokens (last refresh, last rotation, when the refresh
token ends) and the two amber warnings raised days before mail would stop: a refresh token
the provider ends soon (Google's "Testing" apps: 7 days), and a rotating provider that
stopped sending new refresh tokens. Pure functions: no database, no clock of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from mailboxes.models import Mailbox

# A refresh token that ends within this is worth an administrator's attention now: Google's
# "Testing" apps get 7 days, so the warning comes with 3 days left to act.
EXPIRY_WARNING = timedelta(days=3)
# A provider that rotated before and has refreshed this long without sending a new refresh
# token has stopped rotating (Microsoft, Okta, Keycloak... rotate at every refresh; a day or
# two of hourly refreshes leaves no doubt, and Microsoft's limit is still months away).
STOPPED_ROTATING_AFTER = timedelta(days=2)
# Microsoft's refresh tokens live 90 days from issue; other providers' limits vary.
MICROSOFT_REFRESH_LIFETIME = timedelta(days=90)
AMBER = "#d68a00"


@dataclass(frozen=True)
class HealthWarning:
    code: str  # "refresh_expires" | "stopped_rotating": what the mail-once check compares
    label: str  # a few words for the channel list
    text: str  # what is wrong, when mail stops, what to do


def credential_warnings(mailbox: Mailbox, now: datetime) -> list[HealthWarning]:
    """The amber warnings for a signed-in OAuth2 channel (none once it is red, or not OAuth2)."""
    if not _watched(mailbox):
        return []
    found = (_expiry_warning(mailbox, now), _rotation_warning(mailbox))
    return [warning for warning in found if warning is not None]


def warnings_appeared(
    before: list[HealthWarning], after: list[HealthWarning]
) -> list[HealthWarning]:
    """The warnings in `after` that `before` did not have: what administrators are mailed."""
    known = {warning.code for warning in before}
    return [warning for warning in after if warning.code not in known]


def credential_facts(mailbox: Mailbox) -> list[str]:
    """Sentences for the channel page: when the token was refreshed, rotated, and ends."""
    if not _watched(mailbox):
        return []
    facts = [f"Access token last refreshed {when(mailbox.oauth_refreshed_at)}."]
    if mailbox.oauth_rotated_at is not None:
        facts.append(f"Refresh token last rotated {when(mailbox.oauth_rotated_at)}.")
    elif _refreshed_since_sign_in(mailbox):
        facts.append("The provider keeps one refresh token (no rotation so far, as Google does).")
    if mailbox.oauth_refresh_expires_at is not None:
        facts.append(
            f"The provider ends the refresh token on {when(mailbox.oauth_refresh_expires_at)}."
        )
    return facts


def token_summary(mailbox: Mailbox) -> str:
    """A few words for the channel list: "token refreshed <when>, rotated <when>"."""
    if not _watched(mailbox):
        return ""
    rotated = mailbox.oauth_rotated_at
    return f"token refreshed {when(mailbox.oauth_refreshed_at)}" + (
        f", rotated {when(rotated)}" if rotated else ""
    )


def when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z") if moment else "never"


def _watched(mailbox: Mailbox) -> bool:
    return (
        mailbox.auth_type == Mailbox.AuthType.OAUTH2
        and mailbox.oauth_signed_in_at is not None
        and mailbox.oauth_refused_at is None
    )


def _expiry_warning(mailbox: Mailbox, now: datetime) -> HealthWarning | None:
    ends = mailbox.oauth_refresh_expires_at
    if ends is None or ends - now > EXPIRY_WARNING:
        return None
    date = when(ends)
    if mailbox.oauth_provider == Mailbox.OAuthProvider.GOOGLE:
        todo = (
            "Google does this for an app whose publishing status is “Testing”. Publish the app "
            "(Google Cloud console, OAuth consent screen / Audience: “Publish app”), then sign "
            f"in again; or sign in again before {date} for another 7 days."
        )
    else:
        todo = (
            f"Sign in again before {date}, or change the app's settings at the provider so "
            "that its refresh tokens do not expire."
        )
    return HealthWarning(
        code="refresh_expires",
        label=f"sign-in ends {date}",
        text=f"Mail stops {_in(ends - now)}: the provider ends this channel's refresh token on "
        f"{date}. {todo}",
    )


def _rotation_warning(mailbox: Mailbox) -> HealthWarning | None:
    rotated, refreshed = mailbox.oauth_rotated_at, mailbox.oauth_refreshed_at
    if rotated is None or refreshed is None:
        return None
    # A sign-in brings a new refresh token too: the ageing token dates from the later one.
    issued = max(rotated, mailbox.oauth_signed_in_at or rotated)
    if refreshed - issued < STOPPED_ROTATING_AFTER:
        return None
    limit = "the provider's limit"
    if mailbox.oauth_provider == Mailbox.OAuthProvider.MICROSOFT:
        dies = when(issued + MICROSOFT_REFRESH_LIFETIME)
        limit += f" (Microsoft: 90 days after it was issued, around {dies})"
    return HealthWarning(
        code="stopped_rotating",
        label="refresh token stopped rotating",
        text=(
            "The provider stopped rotating the refresh token: it used to send a new one at "
            f"each refresh, but the last came on {when(issued)} and the refreshes of the "
            f"{(refreshed - issued).days} days since brought none. The token Postroom holds "
            f"will die at {limit}, and mail stops then. Sign in again before that to get a new "
            "one, and check the app's refresh-token rotation setting at the provider."
        ),
    )


def _refreshed_since_sign_in(mailbox: Mailbox) -> bool:
    signed_in, refreshed = mailbox.oauth_signed_in_at, mailbox.oauth_refreshed_at
    return signed_in is not None and refreshed is not None and refreshed > signed_in


def _in(left: timedelta) -> str:
    if left <= timedelta(0):
        return "now"
    if left < timedelta(days=1):
        hours = max(1, int(left.total_seconds() // 3600))
        return f"in {hours} hour{'s' if hours != 1 else ''}"
    return f"in {left.days} day{'s' if left.days != 1 else ''}"
