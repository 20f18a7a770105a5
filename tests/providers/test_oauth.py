"""providers.oauth against the local OpenID provider: PKCE sign-in, refresh, rotation, errors."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from providers import oauth
from providers.errors import AddressBlocked
from tests.providers.conftest import LOOPBACK_BLOCKED, POLICY

REDIRECT = "http://127.0.0.1:9/callback"  # never called: the tests read the redirect's Location


def query(url: str) -> dict:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def app(oauth_provider):
    client = oauth_provider.add_client(REDIRECT)
    return oauth.OAuthApp(
        provider=oauth.CUSTOM,
        client_id=client.client_id,
        client_secret=client.client_secret,
        redirect_uri=REDIRECT,
        discovery_url=oauth_provider.discovery_url,
        timeout=2.0,
    )


def approve(provider, url: str, account: str = "user@example.test", decision: str = "allow"):
    """What the administrator does on the provider's page: open it, press Allow."""
    page = httpx.get(url)
    assert page.status_code == 200 and 'id="allow"' in page.text
    form = {**query(url), "account": account, "decision": decision}
    answer = httpx.post(provider.authorize_url, data=form)
    assert answer.status_code == 302
    return query(answer.headers["location"])


def sign_in(provider, app, account="user@example.test") -> oauth.TokenSet:
    endpoints = oauth.endpoints_resolve(app, POLICY)
    request = oauth.authorization_start(app, endpoints)
    back = approve(provider, request.url, account)
    assert back["state"] == request.state
    return oauth.authorization_finish(
        app, endpoints, POLICY, code=back["code"], code_verifier=request.code_verifier
    )


def test_it_reads_the_endpoints_from_the_discovery_document(oauth_provider, app):
    endpoints = oauth.endpoints_resolve(app, POLICY)
    assert endpoints.authorization_endpoint == oauth_provider.authorize_url
    assert endpoints.token_endpoint == oauth_provider.token_url
    assert endpoints.issuer == oauth_provider.issuer


def test_the_sign_in_url_carries_state_and_an_s256_challenge(app):
    request = oauth.authorization_start(app, oauth.endpoints_resolve(app, POLICY))
    params = query(request.url)
    assert params["code_challenge_method"] == "S256"
    assert params["state"] == request.state
    assert params["code_challenge"] != request.code_verifier
    assert params["redirect_uri"] == REDIRECT


def test_it_signs_in_and_learns_the_account_from_the_id_token(oauth_provider, app):
    tokens = sign_in(oauth_provider, app, "support@example.test")
    assert tokens.signed_in_as == "support@example.test"
    assert tokens.refresh_token and tokens.access_token
    assert tokens.expires_at is not None
    assert "openid" in tokens.scope


def test_a_code_works_once(oauth_provider, app):
    endpoints = oauth.endpoints_resolve(app, POLICY)
    request = oauth.authorization_start(app, endpoints)
    back = approve(oauth_provider, request.url)
    oauth.authorization_finish(
        app, endpoints, POLICY, code=back["code"], code_verifier=request.code_verifier
    )
    with pytest.raises(oauth.SignInRefused, match="already used"):
        oauth.authorization_finish(
            app, endpoints, POLICY, code=back["code"], code_verifier=request.code_verifier
        )


def test_a_wrong_verifier_is_refused(oauth_provider, app):
    endpoints = oauth.endpoints_resolve(app, POLICY)
    request = oauth.authorization_start(app, endpoints)
    back = approve(oauth_provider, request.url)
    with pytest.raises(oauth.SignInRefused):
        oauth.authorization_finish(
            app, endpoints, POLICY, code=back["code"], code_verifier="x" * 64
        )


def test_a_refresh_stores_the_rotated_refresh_token(oauth_provider, app):
    first = sign_in(oauth_provider, app)
    endpoints = oauth.endpoints_resolve(app, POLICY)
    second = oauth.token_refresh(app, endpoints, POLICY, refresh_token=first.refresh_token)
    assert second.rotated and second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    # The old one died with the rotation; the new one works.
    with pytest.raises(oauth.SignInRefused, match="sign in again"):
        oauth.token_refresh(app, endpoints, POLICY, refresh_token=first.refresh_token)
    third = oauth.token_refresh(app, endpoints, POLICY, refresh_token=second.refresh_token)
    assert third.rotated


def test_a_provider_that_does_not_rotate_keeps_the_refresh_token(oauth_provider, app):
    oauth_provider.rotate = False
    first = sign_in(oauth_provider, app)
    endpoints = oauth.endpoints_resolve(app, POLICY)
    second = oauth.token_refresh(app, endpoints, POLICY, refresh_token=first.refresh_token)
    assert not second.rotated
    assert second.refresh_token == first.refresh_token


def test_a_revoked_account_cannot_refresh(oauth_provider, app):
    tokens = sign_in(oauth_provider, app, "support@example.test")
    oauth_provider.revoke_account("support@example.test")
    endpoints = oauth.endpoints_resolve(app, POLICY)
    with pytest.raises(oauth.SignInRefused) as caught:
        oauth.token_refresh(app, endpoints, POLICY, refresh_token=tokens.refresh_token)
    assert caught.value.permanent


def test_explicit_urls_work_without_discovery(oauth_provider, app):
    explicit = oauth.OAuthApp(
        provider=oauth.CUSTOM,
        client_id=app.client_id,
        client_secret=app.client_secret,
        redirect_uri=REDIRECT,
        auth_url=oauth_provider.authorize_url,
        token_url=oauth_provider.token_url,
        timeout=2.0,
    )
    assert sign_in(oauth_provider, explicit).signed_in_as == "user@example.test"


def test_a_wrong_client_secret_is_named(oauth_provider, app):
    endpoints = oauth.endpoints_resolve(app, POLICY)
    request = oauth.authorization_start(app, endpoints)
    back = approve(oauth_provider, request.url)
    wrong = oauth.OAuthApp(**{**app.__dict__, "client_secret": "not-it"})
    with pytest.raises(oauth.OAuthFailed, match="client ID or client secret"):
        oauth.authorization_finish(
            wrong, endpoints, POLICY, code=back["code"], code_verifier=request.code_verifier
        )


def test_the_network_policy_applies_to_discovery(app):
    with pytest.raises(AddressBlocked):
        oauth.endpoints_resolve(app, LOOPBACK_BLOCKED)


def test_google_asks_for_offline_access_and_consent():
    app = oauth.OAuthApp(provider=oauth.GOOGLE, client_id="id", redirect_uri=REDIRECT)
    endpoints = oauth.endpoints_resolve(app, POLICY)
    params = query(oauth.authorization_start(app, endpoints).url)
    assert params["access_type"] == "offline" and params["prompt"] == "consent"
    assert "https://mail.google.com/" in params["scope"].split()
    assert endpoints.token_endpoint == "https://oauth2.googleapis.com/token"


@pytest.mark.parametrize(
    "tenant", ["common", "organizations", "4f2c0e8a-1234-4abc-9def-0123456789ab"]
)
def test_microsoft_endpoints_follow_the_tenant(tenant):
    app = oauth.OAuthApp(
        provider=oauth.MICROSOFT, client_id="id", redirect_uri=REDIRECT, tenant=tenant
    )
    endpoints = oauth.endpoints_resolve(app, POLICY)
    base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    assert endpoints.authorization_endpoint == f"{base}/authorize"
    assert endpoints.token_endpoint == f"{base}/token"
    scopes = query(oauth.authorization_start(app, endpoints).url)["scope"].split()
    assert "offline_access" in scopes
    for what in ("IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"):
        assert f"https://outlook.office.com/{what}" in scopes


def test_a_single_tenant_app_on_common_is_explained():
    app = oauth.OAuthApp(provider=oauth.MICROSOFT, client_id="id", tenant="common")
    text = oauth.describe_error(
        app,
        "invalid_request",
        "AADSTS50194: Application 'id' is not configured as a multi-tenant application.",
    )
    assert "tenant ID" in text and "instead of common" in text
