"""An administrator signs a channel in with OAuth2 against the local OpenID provider."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from mailboxes import oauth as mailbox_oauth
from mailboxes.models import Mailbox

pytestmark = pytest.mark.django_db

CHANNEL = "support@example.test"


@pytest.fixture
def client_app(oauth_provider):
    """The app registered at the provider, with Postroom's callback as its redirect URI."""
    return oauth_provider.add_client(mailbox_oauth.callback_url())


@pytest.fixture
def channel(oauth_provider, client_app):
    return oauth_channel(oauth_provider, client_app)


def oauth_channel(provider, app=None) -> Mailbox:
    """An offline channel set up for the local provider, not signed in yet."""
    app = app or provider.add_client(mailbox_oauth.callback_url())
    return Mailbox.objects.create(
        name="Support",
        email_address=CHANNEL,
        auth_type=Mailbox.AuthType.OAUTH2,
        oauth_provider=Mailbox.OAuthProvider.CUSTOM,
        oauth_client_id=app.client_id,
        oauth_client_secret=app.client_secret,
        oauth_discovery_url=provider.discovery_url,
        listen=False,
        enabled=False,
    )


def change_url(mailbox: Mailbox) -> str:
    return reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])


def start(client, mailbox: Mailbox) -> str:
    """Press the sign-in button; return where Postroom sends the browser."""
    response = client.post(reverse("admin:mailboxes_mailbox_oauth_start", args=[mailbox.pk]))
    assert response.status_code == 302
    return response["Location"]


def approve(provider, url: str, account: str = CHANNEL, decision: str = "allow") -> str:
    """On the provider's page: the account, then Allow. Returns where it redirects back to."""
    page = httpx.get(url)
    assert page.status_code == 200, page.text
    form = {**dict(parse_qsl(urlsplit(url).query)), "account": account, "decision": decision}
    answer = httpx.post(provider.authorize_url, data=form)
    assert answer.status_code == 302
    return answer.headers["location"]


def come_back(client, location: str):
    parts = urlsplit(location)
    return client.get(f"{parts.path}?{parts.query}", follow=True)


def test_the_channel_page_offers_the_sign_in_button(admin_client, channel):
    page = admin_client.get(change_url(channel)).content.decode()
    assert "Sign in with provider" in page
    assert "Not signed in yet" in page


def test_it_signs_in_and_stores_the_tokens_encrypted(admin_client, oauth_provider, channel):
    location = start(admin_client, channel)
    assert location.startswith(oauth_provider.authorize_url)
    back = approve(oauth_provider, location)
    assert back.startswith(mailbox_oauth.callback_url())

    page = come_back(admin_client, back).content.decode()

    channel.refresh_from_db()
    assert f"signed in as {CHANNEL}" in page
    assert channel.oauth_signed_in_as == CHANNEL
    assert oauth_provider.active_token(channel.oauth_access_token) is not None
    assert channel.oauth_refresh_token.startswith("rt-")
    assert "openid" in channel.oauth_scopes
    assert channel.oauth_expires_at is not None and channel.oauth_refreshed_at is not None
    # Never in the page, never in the database as plain text.
    assert channel.oauth_access_token not in page and channel.oauth_refresh_token not in page
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT oauth_access_token, oauth_refresh_token, oauth_scopes, oauth_token_expires "
            "FROM mailboxes_mailbox WHERE id = %s",
            [channel.pk],
        )
        stored = cursor.fetchone()
    assert channel.oauth_access_token not in stored[0]
    assert channel.oauth_refresh_token not in stored[1]
    assert "openid" not in stored[2] and stored[3] and ":" not in stored[3]


def test_another_account_is_refused(admin_client, oauth_provider, channel):
    back = approve(oauth_provider, start(admin_client, channel), account="someone@example.test")
    page = come_back(admin_client, back).content.decode()

    assert f"You signed in as someone@example.test, but this channel is {CHANNEL}" in page
    channel.refresh_from_db()
    assert channel.oauth_refresh_token == "" and channel.oauth_access_token == ""


def test_a_delegate_signs_in_a_shared_mailbox(admin_client, oauth_provider, channel):
    Mailbox.objects.filter(pk=channel.pk).update(oauth_shared_mailbox=True)
    back = approve(oauth_provider, start(admin_client, channel), account="delegate@example.test")
    come_back(admin_client, back)

    channel.refresh_from_db()
    assert channel.oauth_signed_in_as == "delegate@example.test"
    assert channel.oauth_refresh_token


def test_a_state_works_once(admin_client, oauth_provider, channel):
    back = approve(oauth_provider, start(admin_client, channel))
    come_back(admin_client, back)
    page = come_back(admin_client, back).content.decode()
    assert "unknown or was already used" in page


def test_a_state_from_another_session_is_refused(
    admin_client, client, admin_user, oauth_provider, channel
):
    back = approve(oauth_provider, start(admin_client, channel))
    client.force_login(admin_user)
    page = come_back(client, back).content.decode()
    assert "unknown or was already used" in page
    channel.refresh_from_db()
    assert not channel.oauth_refresh_token


def test_a_sign_in_older_than_ten_minutes_has_expired(
    admin_client, oauth_provider, channel, monkeypatch
):
    location = start(admin_client, channel)
    back = approve(oauth_provider, location)
    started = mailbox_oauth._now()
    monkeypatch.setattr(mailbox_oauth, "_now", lambda: started + 601)
    page = come_back(admin_client, back).content.decode()
    assert "more than 10 minutes ago and has expired" in page


def test_a_denied_consent_says_so(admin_client, oauth_provider, channel):
    back = approve(oauth_provider, start(admin_client, channel), decision="deny")
    page = come_back(admin_client, back).content.decode()
    assert "cancelled or access was not granted" in page


def test_the_callback_needs_permission_to_change_the_channel(
    client, django_user_model, oauth_provider, channel
):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_mailbox"))
    client.force_login(viewer)
    session = client.session
    url = mailbox_oauth.mailbox_oauth_start(mailbox=channel, session=session)
    session.save()
    back = approve(oauth_provider, url)
    parts = urlsplit(back)
    assert client.get(f"{parts.path}?{parts.query}").status_code == 403


@pytest.fixture
def manual_channel(oauth_provider, channel):
    """A provider that cannot send the browser back to Postroom (seed 001's manual flow)."""
    elsewhere = "https://localhost:8284/networking/rest/token"
    oauth_provider.clients[channel.oauth_client_id].redirect_uris.append(elsewhere)
    Mailbox.objects.filter(pk=channel.pk).update(oauth_redirect_uri=elsewhere)
    channel.refresh_from_db()
    return channel


def open_manual_page(client, mailbox: Mailbox) -> tuple[str, str]:
    page = client.get(reverse("admin:mailboxes_mailbox_oauth_manual", args=[mailbox.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    url = page.context["authorization_url"]
    assert url.replace("&", "&amp;") in text
    return url, page.context["state"]


def test_the_manual_path_takes_the_pasted_address(admin_client, oauth_provider, manual_channel):
    # The sign-in button leads to the manual page when the redirect goes elsewhere.
    assert start(admin_client, manual_channel).endswith("/oauth/manual/")
    url, state = open_manual_page(admin_client, manual_channel)
    back = approve(oauth_provider, url)
    manual = reverse("admin:mailboxes_mailbox_oauth_manual", args=[manual_channel.pk])

    page = admin_client.post(manual, {"state": state, "code": back}, follow=True)

    assert f"signed in as {CHANNEL}" in page.content.decode()
    manual_channel.refresh_from_db()
    assert manual_channel.oauth_refresh_token

    again = admin_client.post(manual, {"state": state, "code": back}, follow=True)
    assert "unknown or was already used" in again.content.decode()


def test_a_used_code_is_refused_clearly(admin_client, oauth_provider, manual_channel):
    url, state = open_manual_page(admin_client, manual_channel)
    code = dict(parse_qsl(urlsplit(approve(oauth_provider, url)).query))["code"]
    manual = reverse("admin:mailboxes_mailbox_oauth_manual", args=[manual_channel.pk])
    admin_client.post(manual, {"state": state, "code": code})

    _, second_state = open_manual_page(admin_client, manual_channel)
    page = admin_client.post(manual, {"state": second_state, "code": code}, follow=True)
    assert "authorization code was refused: it was already used" in page.content.decode()


def test_a_wrong_code_is_refused_clearly(admin_client, manual_channel):
    _, state = open_manual_page(admin_client, manual_channel)
    manual = reverse("admin:mailboxes_mailbox_oauth_manual", args=[manual_channel.pk])
    page = admin_client.post(manual, {"state": state, "code": "not-a-code"}, follow=True)
    assert "authorization code was refused" in page.content.decode()


def test_a_refresh_records_the_rotation_and_one_runs_at_a_time(
    admin_client, oauth_provider, channel
):
    come_back(admin_client, approve(oauth_provider, start(admin_client, channel)))
    channel.refresh_from_db()
    first = channel.oauth_refresh_token

    assert mailbox_oauth.mailbox_oauth_refresh(mailbox=channel)
    channel.refresh_from_db()
    assert channel.oauth_refresh_token != first
    assert channel.oauth_rotated_at is not None
    assert oauth_provider.active_token(channel.oauth_access_token) is not None

    # Another worker holds the refresh: this one leaves the tokens alone.
    Mailbox.objects.filter(pk=channel.pk).update(
        oauth_refresh_lease_until=timezone.now() + mailbox_oauth.REFRESH_LEASE
    )
    assert not mailbox_oauth.mailbox_oauth_refresh(mailbox=channel)
