"""OAuth2 sign-in and token refresh for mail accounts, on authlib's httpx client.

One client object per channel and call (never an app-wide registration): the authorization-code
grant with PKCE S256 (RFC 7636) for Google and Microsoft presets, and for any provider given an
OpenID Connect discovery URL or explicit authorization and token URLs. Every request goes
through netguard (the URLs are an administrator's) and never follows a redirect.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from providers.config import NetworkPolicy
from providers.errors import AuthenticationFailed, ProviderError, server_said
from providers.guarded_http import GuardedTransport

GOOGLE = "google"
MICROSOFT = "microsoft"
CUSTOM = "custom"
MICROSOFT_LOGIN = "https://login.microsoftonline.com"
OUTLOOK = "https://outlook.office.com"
# Google issues a refresh token only with access_type=offline, and again on a later sign-in
# only with prompt=consent (without it, a second sign-in returns no refresh token).
GOOGLE_PARAMS = (("access_type", "offline"), ("prompt", "consent"))
GOOGLE_SCOPE = "openid email https://mail.google.com/"
# offline_access is Microsoft's way of asking for a refresh token.
MICROSOFT_SCOPE = (
    f"offline_access openid email {OUTLOOK}/IMAP.AccessAsUser.All "
    f"{OUTLOOK}/POP.AccessAsUser.All {OUTLOOK}/SMTP.Send"
)
CUSTOM_SCOPE = "openid email offline_access"
# Microsoft's codes for "this app does not live in that tenant" (single-tenant app on /common).
_WRONG_TENANT = ("AADSTS50194", "AADSTS700016", "AADSTS90130")


class OAuthFailed(ProviderError):
    """The provider could not be reached or answered something unusable; retrying may help."""

    kind = "oauth"


class SignInRefused(AuthenticationFailed):
    """The provider refused the code or the refresh token: only signing in again helps."""

    kind = "oauth_refused"


@dataclass(frozen=True)
class OAuthApp:
    """A channel's OAuth settings, as the administrator entered them."""

    provider: str  # GOOGLE | MICROSOFT | CUSTOM
    client_id: str
    client_secret: str = field(default="", repr=False)
    redirect_uri: str = ""
    scope: str = ""  # empty: the provider's preset
    auth_url: str = ""
    token_url: str = ""
    discovery_url: str = ""
    tenant: str = "common"  # Microsoft: common, organizations, consumers or a tenant ID
    timeout: float = 15.0


@dataclass(frozen=True)
class Endpoints:
    authorization_endpoint: str
    token_endpoint: str
    scope: str
    issuer: str = ""
    userinfo_endpoint: str = ""
    params: tuple[tuple[str, str], ...] = ()  # extra authorization-request parameters


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the administrator, and what the callback needs to finish (kept secret)."""

    url: str
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime | None
    scope: str
    signed_in_as: str = ""  # the account's address, from the ID token or userinfo
    rotated: bool = False  # a refresh returned a new refresh token
    # When the provider says the refresh token itself ends (Google's refresh_token_expires_in,
    # sent for apps in "Testing" status and for time-limited grants); None: not said.
    refresh_expires_at: datetime | None = None


def endpoints_resolve(app: OAuthApp, policy: NetworkPolicy) -> Endpoints:
    """The preset's endpoints (explicit URLs win), or those of the discovery document."""
    if app.provider == GOOGLE:
        return Endpoints(
            authorization_endpoint=app.auth_url or "https://accounts.google.com/o/oauth2/v2/auth",
            token_endpoint=app.token_url or "https://oauth2.googleapis.com/token",
            scope=app.scope or GOOGLE_SCOPE,
            issuer="https://accounts.google.com",
            params=GOOGLE_PARAMS,
        )
    if app.provider == MICROSOFT:
        base = f"{MICROSOFT_LOGIN}/{app.tenant or 'common'}/oauth2/v2.0"
        return Endpoints(
            authorization_endpoint=app.auth_url or f"{base}/authorize",
            token_endpoint=app.token_url or f"{base}/token",
            scope=app.scope or MICROSOFT_SCOPE,
        )
    if app.discovery_url and not (app.auth_url and app.token_url):
        return _discover(app, policy)
    if not (app.auth_url and app.token_url):
        raise OAuthFailed(
            "Enter a discovery URL, or both the auth URL and the access token URL.",
            permanent=True,
        )
    return Endpoints(app.auth_url, app.token_url, scope=app.scope or CUSTOM_SCOPE)


def authorization_start(
    app: OAuthApp, endpoints: Endpoints, *, login_hint: str = ""
) -> AuthorizationRequest:
    """The provider's sign-in URL with a fresh state and PKCE S256 challenge."""
    verifier = generate_token(64)  # 64 characters of [A-Za-z0-9]: RFC 7636 4.1 allows 43-128
    params = dict(endpoints.params)
    if login_hint:
        params["login_hint"] = login_hint
    with _client(app, endpoints, NetworkPolicy()) as client:
        url, state = client.create_authorization_url(
            endpoints.authorization_endpoint, code_verifier=verifier, **params
        )
    return AuthorizationRequest(url=url, state=state, code_verifier=verifier)


def authorization_finish(
    app: OAuthApp, endpoints: Endpoints, policy: NetworkPolicy, *, code: str, code_verifier: str
) -> TokenSet:
    """Exchange the authorization code (once: RFC 6749 4.1.2) for tokens and the account."""
    with _client(app, endpoints, policy) as client:
        token = _token_call(
            app,
            "code",
            lambda: client.fetch_token(
                endpoints.token_endpoint,
                grant_type="authorization_code",
                code=code.strip(),
                code_verifier=code_verifier,
            ),
        )
        if not token.get("refresh_token"):
            raise OAuthFailed(
                "The provider sent no refresh token, so Postroom could not keep the channel "
                f"connected. {_offline_hint(app)}",
                permanent=True,
            )
        account = _signed_in_as(app, endpoints, token, policy)
    return _token_set(token, endpoints, signed_in_as=account)


def token_refresh(
    app: OAuthApp, endpoints: Endpoints, policy: NetworkPolicy, *, refresh_token: str
) -> TokenSet:
    """A new access token; the refresh token too where the provider rotates it."""
    with _client(app, endpoints, policy) as client:
        token = _token_call(
            app,
            "refresh",
            lambda: client.refresh_token(endpoints.token_endpoint, refresh_token=refresh_token),
        )
    # authlib copies the old refresh token into the answer when the provider sent none.
    rotated = token.get("refresh_token") not in (None, "", refresh_token)
    token["refresh_token"] = token.get("refresh_token") or refresh_token
    return _token_set(token, endpoints, rotated=rotated)


def describe_error(app: OAuthApp, error: str, description: str = "") -> str:
    """An administrator's sentence for an OAuth error code (RFC 6749 5.2, 4.1.2.1)."""
    said = server_said(description, app.client_secret)
    if any(code in description for code in _WRONG_TENANT):
        return (
            f"Microsoft says the app does not belong to the tenant '{app.tenant}' ({said}). "
            "A single-tenant app needs its tenant ID (Azure portal, app registration, "
            "'Directory (tenant) ID') in the Microsoft tenant field instead of common."
        )
    detail = f" ({said})" if said else ""
    if error == "access_denied":
        return f"Sign-in was cancelled or access was not granted{detail}."
    if error == "invalid_client":
        return f"The provider refused the client ID or client secret{detail}: check them."
    if error == "invalid_scope":
        return f"The provider refused the scope{detail}: check the scope field."
    return f"The provider answered {error}{detail}."


# --- Plumbing -------------------------------------------------------------------------------


def _client(app: OAuthApp, endpoints: Endpoints, policy: NetworkPolicy) -> OAuth2Client:
    return OAuth2Client(
        client_id=app.client_id,
        client_secret=app.client_secret or None,
        scope=endpoints.scope,
        redirect_uri=app.redirect_uri,
        code_challenge_method="S256",
        transport=GuardedTransport(policy),
        timeout=app.timeout,
        follow_redirects=False,  # a redirect would carry the client secret elsewhere
        trust_env=False,  # an environment proxy would bypass netguard
    )


def _discover(app: OAuthApp, policy: NetworkPolicy) -> Endpoints:
    doc = _get_json(app, app.discovery_url, policy, what="discovery document")
    missing = [k for k in ("authorization_endpoint", "token_endpoint") if not doc.get(k)]
    if missing:
        raise OAuthFailed(
            f"The discovery document at {app.discovery_url} has no {' or '.join(missing)}.",
            permanent=True,
        )
    return Endpoints(
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        scope=app.scope or CUSTOM_SCOPE,
        issuer=doc.get("issuer", ""),
        userinfo_endpoint=doc.get("userinfo_endpoint", ""),
    )


def _get_json(
    app: OAuthApp, url: str, policy: NetworkPolicy, *, what: str, token: str = ""
) -> dict:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(
            transport=GuardedTransport(policy),
            timeout=app.timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc, app.timeout) from exc
    if response.status_code != 200:
        raise OAuthFailed(f"The {what} at {url} answered HTTP {response.status_code}.")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OAuthFailed(f"The {what} at {url} is not a JSON object.", permanent=True)
    return body


def _token_call(app: OAuthApp, step: str, call: Any) -> dict:
    try:
        return dict(call())
    except OAuthError as exc:
        raise _refused(app, step, exc.error or "", exc.description or "") from exc
    except httpx.HTTPStatusError as exc:  # a 5xx, or a body that is not JSON
        raise OAuthFailed(
            f"The token endpoint answered HTTP {exc.response.status_code}; Postroom will retry."
        ) from exc
    except httpx.HTTPError as exc:
        raise _unreachable(str(exc.request.url), exc, app.timeout) from exc


def _refused(app: OAuthApp, step: str, error: str, description: str) -> ProviderError:
    text = describe_error(app, error, description)
    if error == "invalid_grant" and step == "code":
        return SignInRefused(
            "The authorization code was refused: it was already used, has expired, or was "
            f"issued for another redirect URI. Sign in again. {text}"
        )
    if error == "invalid_grant":
        return SignInRefused(
            "The provider refused the refresh token (revoked, expired, or the password "
            f"changed): sign in again. {text}"
        )
    permanent = error in ("invalid_client", "unauthorized_client", "invalid_scope")
    return OAuthFailed(text, permanent=permanent)


def _unreachable(url: str, exc: httpx.HTTPError, timeout: float) -> OAuthFailed:
    host = urlsplit(url).hostname or url
    if isinstance(exc, httpx.TimeoutException):
        return OAuthFailed(f"{host} did not answer within {timeout:g} s.")
    return OAuthFailed(f"Could not reach {host} ({exc}).")


def _token_set(
    token: dict, endpoints: Endpoints, *, signed_in_as: str = "", rotated: bool = False
) -> TokenSet:
    expires_at = token.get("expires_at")
    return TokenSet(
        access_token=token["access_token"],
        refresh_token=token.get("refresh_token") or "",
        expires_at=datetime.fromtimestamp(int(expires_at), UTC) if expires_at else None,
        scope=token.get("scope") or endpoints.scope,
        signed_in_as=signed_in_as,
        rotated=rotated,
        refresh_expires_at=_refresh_expires_at(token),
    )


def _refresh_expires_at(token: dict) -> datetime | None:
    try:
        seconds = int(token["refresh_token_expires_in"])
    except (KeyError, TypeError, ValueError):
        return None
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _signed_in_as(app: OAuthApp, endpoints: Endpoints, token: dict, policy: NetworkPolicy) -> str:
    """The account's address: the ID token's claims, else the userinfo endpoint.

    The ID token came straight from the token endpoint over TLS, which OpenID Connect Core
    3.1.3.7 accepts in place of checking its signature; issuer and audience are still checked.
    """
    claims = _id_token_claims(token.get("id_token", ""))
    if claims:
        _check_claims(app, endpoints, claims)
        address = claims.get("email") or claims.get("preferred_username") or claims.get("upn")
        if address:
            return str(address)
    if endpoints.userinfo_endpoint:
        info = _get_json(
            app,
            endpoints.userinfo_endpoint,
            policy,
            what="userinfo endpoint",
            token=token["access_token"],
        )
        return str(info.get("email") or info.get("preferred_username") or "")
    return ""


def _id_token_claims(id_token: str) -> dict:
    parts = id_token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _check_claims(app: OAuthApp, endpoints: Endpoints, claims: dict) -> None:
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if app.client_id not in audiences:
        raise OAuthFailed("The ID token was issued to another app.", permanent=True)
    if endpoints.issuer and claims.get("iss") != endpoints.issuer:
        raise OAuthFailed(
            f"The ID token comes from {claims.get('iss')!r}, not {endpoints.issuer!r}.",
            permanent=True,
        )


def _offline_hint(app: OAuthApp) -> str:
    if app.provider == MICROSOFT:
        return "Include offline_access in the scope."
    if app.provider == GOOGLE:
        return "Google sends one with access_type=offline and prompt=consent (Postroom asks)."
    return "Ask for offline access in the scope (often offline_access)."
