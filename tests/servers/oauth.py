"""A local OAuth2 / OpenID Connect provider for tests, on authlib's server side.

It serves what Postroom's sign-in and token code talk to at Google, Microsoft or any OpenID
provider: a discovery document (OpenID Connect Discovery 1.0), an authorize page with an
"Allow" button (the account that signs in is typed in a box, pre-filled with `account`), a token
endpoint for the authorization-code grant with PKCE required (RFC 7636) and for refresh
(RFC 6749 section 6), RS256 ID tokens with the account's email, JWKS, userinfo, revocation
(RFC 7009) and introspection (RFC 7662, for Dovecot's oauth2 passdb).

Access tokens are short-lived (`access_token_lifetime`); refresh tokens rotate (each refresh
returns a new one and the old one dies, as Microsoft's and Okta's do) unless `rotate` is off
(turned off between refreshes, it is a provider that stopped rotating). With
`refresh_token_lifetime` set, refresh tokens end that many seconds after issue and token
responses carry `refresh_token_expires_in`, as Google's do for apps in "Testing" status;
`age_refresh_tokens()` lets days pass for them.
`revoke_account()` is the revocation switch: every token of that account stops working, as when
a user changes their password (seed 001). `expire_access_tokens()` ends the present access
tokens without waiting. No request ever sleeps.

The session-scoped ``oauth_server`` starts it once; tests use the function-scoped
``oauth_provider``, which resets clients, tokens and switches.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    OAuth2Error,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey

HOST = "127.0.0.1"
CODE_LIFETIME = 600  # seconds an authorization code is good for (RFC 6749 4.1.2: short)


@dataclass(frozen=True)
class Account:
    email: str

    def get_user_id(self) -> str:
        return self.email


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.client_secret) and client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if not self.client_secret:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    account: Account
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.issued_at)

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token(TokenMixin):
    client_id: str
    account: Account
    scope: str
    access_token: str
    refresh_token: str | None
    expires_at: float
    access_revoked: bool = False
    refresh_revoked: bool = False
    client: Client | None = None  # None for tokens issued directly (issue_token)
    refresh_expires_at: float | None = None  # None: the refresh token does not expire

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        ended = self.refresh_expires_at is not None and time.time() >= self.refresh_expires_at
        return self.refresh_revoked or ended

    def get_user(self) -> Account:
        return self.account

    def get_client(self) -> Client | None:
        return self.client

    @property
    def access_active(self) -> bool:
        return not self.access_revoked and not self.is_expired()


class _Request(OAuth2Request):
    """An authlib request built from what BaseHTTPRequestHandler parsed."""

    def __init__(self, method: str, uri: str, headers: Any, query: dict, form: dict) -> None:
        super().__init__(method, uri, headers=headers)
        self._query = query
        self._form = form
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self) -> dict:
        return self._query

    @property
    def form(self) -> dict:
        return self._form


class _AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, request: _Request) -> None:
        payload = request.payload.data
        self.server.provider.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=payload.get("redirect_uri", ""),
            scope=request.scope or "",
            account=request.user,
            code_challenge=payload.get("code_challenge", ""),
            code_challenge_method=payload.get("code_challenge_method", ""),
            nonce=payload.get("nonce"),
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        item = self.server.provider.codes.get(code)
        fresh = item is not None and time.time() - item.issued_at < CODE_LIFETIME
        return item if fresh and item.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        # A code works once (RFC 6749 4.1.2): a second exchange is invalid_grant.
        self.server.provider.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Account:
        return authorization_code.account


class _RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:  # noqa: N802 - authlib's name
        return self.server.provider.rotate

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = self.server.provider.by_refresh.get(refresh_token)
        return token if token and not token.is_revoked() else None

    def authenticate_user(self, refresh_token: Token) -> Account:
        return refresh_token.account

    def revoke_old_credential(self, refresh_token: Token) -> None:
        if self.server.provider.rotate:
            refresh_token.refresh_revoked = True


class _OpenIDCode(OpenIDCode):
    def __init__(self, provider: OAuthTestProvider) -> None:
        super().__init__(require_nonce=False)
        self.provider = provider

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.provider.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict:
        return {"alg": "RS256", "kid": self.provider.key.kid}

    def get_client_claims(self, client: Client) -> dict:
        return {"iss": self.provider.issuer, "aud": [client.client_id]}

    def exists_nonce(self, nonce: str, request: _Request) -> bool:
        return False

    def generate_user_info(self, user: Account, scope: str) -> UserInfo:
        return UserInfo(sub=user.email, email=user.email, email_verified=True)


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        provider = self.server.provider
        return provider.by_refresh.get(token_string) or provider.by_access.get(token_string)

    def revoke_token(self, token: Token, request: _Request) -> None:
        token.access_revoked = token.refresh_revoked = True


class _Server(AuthorizationServer):
    def __init__(self, provider: OAuthTestProvider) -> None:
        super().__init__()
        self.provider = provider
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: "at-" + generate_token(32),
                refresh_token_generator=lambda **_: "rt-" + generate_token(40),
                expires_generator=lambda client, grant_type: provider.access_token_lifetime,
            ),
        )
        extensions = [CodeChallenge(required=True), _OpenIDCode(provider)]
        self.register_grant(_AuthorizationCodeGrant, extensions)
        self.register_grant(_RefreshTokenGrant)
        self.register_endpoint(_Revocation)

    def query_client(self, client_id: str) -> Client | None:
        return self.provider.clients.get(client_id)

    def save_token(self, token: dict, request: _Request) -> None:
        self.provider.store_token(token, request)

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def create_json_request(self, request: _Request) -> _Request:
        return request

    def handle_response(self, status: int, body: Any, headers: list) -> tuple:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class OAuthTestProvider:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer((HOST, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.provider = self  # type: ignore[attr-defined]
        self.key = RSAKey.generate_key(2048, parameters={"kid": "postroom-test"})
        self.server = _Server(self)
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.reset()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def reset(self) -> None:
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.by_access: dict[str, Token] = {}
        self.by_refresh: dict[str, Token] = {}
        self.access_token_lifetime = 60
        self.rotate = True
        self.refresh_token_lifetime: int | None = None  # seconds; Google "Testing": 7 days
        self.account = "user@example.test"
        self.token_requests: list[dict] = []  # the grant types asked for, in order

    # --- What tests arrange -------------------------------------------------------------

    def add_client(self, redirect_uri: str, *, secret: str = "test-secret") -> Client:
        client = Client("client-" + generate_token(8), secret, [redirect_uri])
        self.clients[client.client_id] = client
        return client

    def revoke_account(self, email: str) -> None:
        """The revocation switch: the account's refresh and access tokens all stop working."""
        with self.lock:
            for token in self.by_access.values():
                if token.account.email == email:
                    token.access_revoked = token.refresh_revoked = True

    def issue_token(self, email: str, *, scope: str = "openid email mail") -> Token:
        """Tokens for `email` without the browser dance, for tests about the mail servers."""
        record = Token(
            client_id="direct",
            account=Account(email),
            scope=scope,
            access_token="at-" + generate_token(32),
            refresh_token="rt-" + generate_token(40),
            expires_at=time.time() + self.access_token_lifetime,
        )
        with self.lock:
            self.by_access[record.access_token] = record
            self.by_refresh[record.refresh_token] = record
        return record

    def age_refresh_tokens(self, seconds: float) -> None:
        """Let time pass for the refresh tokens that expire (refresh_token_lifetime)."""
        with self.lock:
            for token in self.by_refresh.values():
                if token.refresh_expires_at is not None:
                    token.refresh_expires_at -= seconds

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token in self.by_access.values():
                token.expires_at = time.time() - 1

    def active_token(self, access_token: str) -> Token | None:
        token = self.by_access.get(access_token)
        return token if token and token.access_active else None

    # --- What the endpoints call ---------------------------------------------------------

    def store_token(self, token: dict, request: _Request) -> None:
        old = request.refresh_token if isinstance(request.refresh_token, Token) else None
        refresh = token.get("refresh_token") or (old.refresh_token if old else None)
        refresh_ends = self._refresh_ends(old, new=bool(token.get("refresh_token")))
        if refresh_ends is not None:
            # The answer goes out after save_token, so the field reaches the client.
            token["refresh_token_expires_in"] = max(0, int(refresh_ends - time.time()))
        record = Token(
            client_id=request.client.client_id,
            client=request.client,
            account=request.user,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
            refresh_token=refresh,
            expires_at=time.time() + token.get("expires_in", 0),
            refresh_expires_at=refresh_ends,
        )
        with self.lock:
            self.by_access[record.access_token] = record
            if refresh:
                self.by_refresh[refresh] = record

    def _refresh_ends(self, old: Token | None, *, new: bool) -> float | None:
        """A new refresh token ends a lifetime from now; a kept one when it always did."""
        if not new and old is not None:
            return old.refresh_expires_at
        if self.refresh_token_lifetime is None:
            return None
        return time.time() + self.refresh_token_lifetime

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorize_url,
            "token_endpoint": self.token_url,
            "userinfo_endpoint": f"{self.url}/userinfo",
            "jwks_uri": f"{self.url}/jwks",
            "revocation_endpoint": f"{self.url}/revoke",
            "introspection_endpoint": f"{self.url}/introspect",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "offline_access", "mail"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def introspect(self, access_token: str) -> dict:
        token = self.active_token(access_token)
        if token is None:
            return {"active": False}
        return {
            "active": True,
            "sub": token.account.email,
            "email": token.account.email,
            "username": token.account.email,
            "scope": token.scope,
            "client_id": token.client_id,
            "exp": int(token.expires_at),
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def provider(self) -> OAuthTestProvider:
        return self.server.provider  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass

    def do_GET(self) -> None:
        path, query = self._parsed()
        if path == "/.well-known/openid-configuration":
            return self._json(200, self.provider.discovery())
        if path == "/jwks":
            return self._json(200, {"keys": [self.provider.key.as_dict(private=False)]})
        if path == "/authorize":
            return self._authorize_page(query)
        if path == "/userinfo":
            return self._userinfo()
        self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        path, query = self._parsed()
        form = self._form()
        request = _Request("POST", self._uri(), self.headers, query, form)
        server = self.provider.server
        if path == "/token":
            self.provider.token_requests.append({"grant_type": form.get("grant_type", "")})
            return self._send(*server.create_token_response(request))
        if path == "/revoke":
            return self._send(*server.create_endpoint_response("revocation", request))
        if path == "/introspect":
            return self._json(200, self.provider.introspect(form.get("token", "")))
        if path == "/authorize":
            return self._authorize(request, form)
        self._json(404, {"error": "not_found"})

    # --- The authorize page: an "Allow" button, as the big providers' consent screens ---

    def _authorize_page(self, query: dict) -> None:
        request = _Request("GET", self._uri(), self.headers, query, {})
        try:
            self.provider.server.get_consent_grant(request, end_user=None)
        except OAuth2Error as error:
            return self._html(
                400,
                f"<h1>Sign-in refused</h1><p id='error'>{error.error}: "
                f"{html.escape(error.description or '')}</p>",
            )
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in query.items()
        )
        account = html.escape(self.provider.account)
        self._html(
            200,
            "<h1>Test provider: sign in</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            f'<label>Account <input name="account" id="account" value="{account}"></label>'
            '<button type="submit" name="decision" value="allow" id="allow">Allow</button>'
            '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
            "</form>",
        )

    def _authorize(self, request: _Request, form: dict) -> None:
        server = self.provider.server
        account = Account(form.get("account", self.provider.account))
        try:
            grant = server.get_consent_grant(request, end_user=account)
        except OAuth2Error as error:
            return self._html(400, f"<p id='error'>{error.error}</p>")
        user = account if form.get("decision") == "allow" else None
        self._send(*server.create_authorization_response(request, grant_user=user, grant=grant))

    def _userinfo(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = self.provider.active_token(auth.removeprefix("Bearer ").strip())
        if token is None:
            return self._json(401, {"error": "invalid_token"})
        self._json(200, {"sub": token.account.email, "email": token.account.email})

    # --- Plumbing ------------------------------------------------------------------------

    def _parsed(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        return parts.path, dict(parse_qsl(parts.query))

    def _uri(self) -> str:
        return f"{self.provider.url}{self.path}"

    def _form(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return dict(parse_qsl(self.rfile.read(length).decode())) if length else {}

    def _send(self, status: int, body: Any, headers: list) -> None:
        data = json.dumps(body) if isinstance(body, dict) else (body or "")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        payload = data.encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, body: dict) -> None:
        self._send(status, body, [("Content-Type", "application/json")])

    def _html(self, status: int, body: str) -> None:
        page = f"<!doctype html><html><body>{body}</body></html>"
        self._send(status, page, [("Content-Type", "text/html; charset=utf-8")])


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthTestProvider]:
    provider = OAuthTestProvider()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def oauth_provider(oauth_server: OAuthTestProvider) -> OAuthTestProvider:
    oauth_server.reset()
    return oauth_server
