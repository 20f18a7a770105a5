"""SendGrid's Web API: is the token accepted, and may it send mail?"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import httpx

from providers import tls
from providers.config import SendGridSettings, ServerAddress
from providers.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    ConnectionTimedOut,
    HostNotFound,
    ProtocolError,
    ProviderError,
    server_said,
)

SEND_SCOPE = "mail.send"
DEFAULT_TIMEOUT = 15.0


def sendgrid_check(settings: SendGridSettings, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """GET /v3/scopes with the token: it must be accepted and carry the mail.send scope."""
    response = _get(settings, "/v3/scopes", timeout)
    if response.status_code in (401, 403):
        raise AuthenticationFailed(
            f"SendGrid refused the API token: {error_text(response, settings.api_token)}. "
            "Create an API key with Mail Send permission and paste it again."
        )
    if response.is_redirect:
        # Never followed: the Authorization header must not travel to wherever it points.
        raise ProtocolError(
            f"SendGrid answered with a redirect (HTTP {response.status_code}) that Postroom "
            "does not follow: check the SendGrid API address.",
            permanent=True,
        )
    if not response.is_success:
        raise ProtocolError(
            f"SendGrid answered HTTP {response.status_code} "
            f"({error_text(response, settings.api_token)}): try again later."
        )
    if SEND_SCOPE not in _scopes(response):
        raise AuthenticationFailed(
            "The SendGrid API token lacks the Mail Send permission: give the API key "
            "'Mail Send' access in SendGrid (Settings > API Keys) or create a new one."
        )


def _get(settings: SendGridSettings, path: str, timeout: float) -> httpx.Response:
    url = settings.api_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {settings.api_token}", "Accept": "application/json"}
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            return client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise network_error(exc, httpx.URL(url), timeout) from exc


def _scopes(response: httpx.Response) -> list[Any]:
    try:
        scopes = response.json().get("scopes")
    except (ValueError, AttributeError):
        scopes = None
    if not isinstance(scopes, list):
        raise ProtocolError("SendGrid's answer has no list of scopes: check the API address.")
    return scopes


def error_text(response: httpx.Response, token: str) -> str:
    """SendGrid's {"errors": [{"field": ..., "message": ...}]}, or the status line."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(_one_error(e) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        text = ""
    return server_said(text or f"HTTP {response.status_code} {response.reason_phrase}", token)


def _one_error(error: dict) -> str:
    field, message = error.get("field"), str(error.get("message"))
    return f"{field}: {message}" if field else message


def network_error(exc: httpx.HTTPError, url: httpx.URL, timeout: float) -> ProviderError:
    where = f"{url.host} port {url.port or (443 if url.scheme == 'https' else 80)}"
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionTimedOut(f"{where} did not answer within {timeout:g} s: try again later.")
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLError):
        server = ServerAddress(url.host, url.port or 443, "ssl", timeout=timeout)
        return tls.tls_error(cause, server)
    if isinstance(cause, socket.gaierror):
        return HostNotFound(f"{url.host} could not be found: check the SendGrid API address.")
    if isinstance(cause, ConnectionRefusedError):
        return ConnectionRefused(f"Nothing answers on {where}: check the SendGrid API address.")
    return ProtocolError(f"The request to SendGrid at {where} failed ({exc}).")


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc
