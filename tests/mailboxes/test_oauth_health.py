"""Credential health: the channel page says when the token was refreshed and rotated, and warns
in amber days before mail would stop (a refresh token the provider ends soon, a rotating
provider that stopped rotating), mailing the administrators once when a warning appears.

Driven through the local OpenID provider: sign-in in the admin, refreshes as a poll makes them
(`mailbox_access_token` with an access token about to expire), pages read with the test client.
"""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mailboxes.models import Mailbox
from mailboxes.oauth import mailbox_access_token
from mailboxes.oauth_health import credential_warnings, when
from tests.mailboxes.test_oauth_sign_in import (
    approve,
    change_url,
    come_back,
    oauth_channel,
    start,
)

pytestmark = pytest.mark.django_db

DAY = 24 * 3600
STOPPED = "The provider stopped rotating the refresh token"


@pytest.fixture
def channel(oauth_provider):
    return oauth_channel(oauth_provider)


@pytest.fixture
def signed_in(admin_client, oauth_provider, channel):
    """sign_in(): the channel signed in at the provider. Access tokens live 10 s, under
    Postroom's 30 s margin, so every mailbox_access_token() refreshes, as a poll would."""
    oauth_provider.access_token_lifetime = 10

    def sign_in() -> Mailbox:
        come_back(admin_client, approve(oauth_provider, start(admin_client, channel)))
        channel.refresh_from_db()
        assert channel.oauth_refresh_token, "the sign-in did not store tokens"
        return channel

    return sign_in


@pytest.fixture
def refresh(django_capture_on_commit_callbacks):
    """refresh(mailbox): what a poll does with a token about to expire; what it leaves for
    after commit (the administrators' mail) runs."""

    def run(mailbox: Mailbox) -> None:
        mailbox.refresh_from_db()
        old = mailbox.oauth_access_token
        with django_capture_on_commit_callbacks(execute=True):
            assert mailbox_access_token(mailbox=mailbox) != old
        mailbox.refresh_from_db()

    return run


def page(client, mailbox: Mailbox) -> str:
    return html.unescape(client.get(change_url(mailbox)).content.decode())


def channel_list(client) -> str:
    return html.unescape(client.get(reverse("admin:mailboxes_mailbox_changelist")).content.decode())


def test_a_refresh_token_the_provider_ends_soon_turns_amber_and_mails_once(
    admin_client, oauth_provider, signed_in, refresh, mailoutbox
):
    # A Google app in "Testing" status: refresh tokens end 7 days after sign-in, never rotate.
    oauth_provider.refresh_token_lifetime = 7 * DAY
    oauth_provider.rotate = False
    mailbox = signed_in()

    ends = mailbox.oauth_refresh_expires_at
    assert ends is not None
    assert timedelta(days=6.9) < ends - timezone.now() <= timedelta(days=7)
    shown = page(admin_client, mailbox)
    assert f"The provider ends the refresh token on {when(ends)}." in shown
    assert "postroom-credential-warning" not in shown

    refresh(mailbox)  # a poll's refresh: nearly 7 days to go, nothing to say
    assert "no rotation so far" in page(admin_client, mailbox)
    listed = channel_list(admin_client)
    assert f"token refreshed {when(mailbox.oauth_refreshed_at)}" in listed
    assert "postroom-credential-warning" not in listed
    assert mailoutbox == []

    oauth_provider.age_refresh_tokens(5 * DAY)  # five days pass at the provider
    refresh(mailbox)

    assert mailbox.oauth_refresh_expires_at < timezone.now() + timedelta(days=2)
    date = when(mailbox.oauth_refresh_expires_at)
    shown = page(admin_client, mailbox)
    assert "postroom-credential-warning" in shown
    assert f"Mail stops in 1 day: the provider ends this channel's refresh token on {date}" in shown
    assert f"Sign in again before {date}" in shown
    assert f"sign-in ends {date}" in channel_list(admin_client)
    [sent] = mailoutbox
    assert sent.to == ["admin@example.com"]
    assert "will stop receiving mail" in sent.subject
    assert f"Sign in again before {date}" in sent.body
    assert change_url(mailbox) in sent.body

    refresh(mailbox)  # the next polls refresh again: no second mail
    refresh(mailbox)
    assert len(mailoutbox) == 1


def test_a_new_sign_in_clears_the_expiry_warning(admin_client, oauth_provider, signed_in):
    oauth_provider.refresh_token_lifetime = 2 * DAY
    mailbox = signed_in()
    assert "postroom-credential-warning" in page(admin_client, mailbox)

    oauth_provider.refresh_token_lifetime = None  # the app was published
    mailbox = signed_in()

    assert mailbox.oauth_refresh_expires_at is None
    assert "postroom-credential-warning" not in page(admin_client, mailbox)


def test_a_provider_that_stopped_rotating_turns_amber_and_mails_once(
    admin_client, oauth_provider, signed_in, refresh, mailoutbox
):
    mailbox = signed_in()
    refresh(mailbox)  # this provider rotates: a new refresh token at each refresh
    assert mailbox.oauth_rotated_at is not None
    assert f"Refresh token last rotated {when(mailbox.oauth_rotated_at)}." in page(
        admin_client, mailbox
    )

    # The channel has been running for days; the last refresh, three days ago, rotated.
    days_ago = timezone.now() - timedelta(days=3)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        oauth_signed_in_at=days_ago - timedelta(days=1),
        oauth_refreshed_at=days_ago,
        oauth_rotated_at=days_ago,
    )
    oauth_provider.rotate = False  # the provider stops sending new refresh tokens
    refresh(mailbox)

    assert mailbox.oauth_rotated_at == days_ago
    shown = page(admin_client, mailbox)
    assert STOPPED in shown
    assert "Sign in again before that" in shown
    listed = channel_list(admin_client)
    assert f"rotated {when(days_ago)}" in listed
    assert "refresh token stopped rotating" in listed
    [sent] = mailoutbox
    assert STOPPED in sent.body

    refresh(mailbox)
    assert len(mailoutbox) == 1

    mailbox = signed_in()  # a new sign-in brings a new refresh token
    assert STOPPED not in page(admin_client, mailbox)


def test_a_provider_that_keeps_rotating_stays_quiet(
    admin_client, oauth_provider, signed_in, refresh, mailoutbox
):
    mailbox = signed_in()
    days_ago = timezone.now() - timedelta(days=3)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        oauth_refreshed_at=days_ago, oauth_rotated_at=days_ago
    )
    refresh(mailbox)

    assert mailbox.oauth_rotated_at > days_ago
    assert "postroom-credential-warning" not in page(admin_client, mailbox)
    assert mailoutbox == []


def health(provider: str, **columns) -> str:
    now = timezone.now()
    mailbox = Mailbox(
        auth_type=Mailbox.AuthType.OAUTH2,
        oauth_provider=provider,
        oauth_signed_in_at=now - timedelta(days=10),
        oauth_refreshed_at=now,
        **columns,
    )
    return " ".join(warning.text for warning in credential_warnings(mailbox, now))


@pytest.mark.parametrize(
    ("provider", "columns", "says"),
    [
        ("google", {"refresh_in": 2}, "Publish the app"),
        ("google", {"refresh_in": 2}, "or sign in again before"),
        ("custom", {"refresh_in": 2}, "so that its refresh tokens do not expire"),
        ("google", {"refresh_in": 5}, ""),
        ("microsoft", {"rotated_ago": 3}, "Microsoft: 90 days after it was issued"),
        ("custom", {"rotated_ago": 3}, "the provider's limit, and mail stops then"),
        ("custom", {"rotated_ago": 1}, ""),
    ],
)
def test_what_each_warning_tells_the_administrator(provider, columns, says):
    now = timezone.now()
    fields = {}
    if "refresh_in" in columns:
        fields["oauth_refresh_expires_at"] = now + timedelta(days=columns["refresh_in"])
    if "rotated_ago" in columns:
        fields["oauth_rotated_at"] = now - timedelta(days=columns["rotated_ago"])
    text = health(provider, **fields)
    if says:
        assert says in text
    else:
        assert text == ""
