"""POST a signed JSON body to an administrator's webhook URL, on httpx.

The URL is an administrator's, so the connection goes through netguard (the address checked is
the address connected to: a DNS answer pointing at a blocked network is refused), no redirect
is followed and no environment proxy is used. The outcome is a typed error whose `permanent`
says whether trying again can help: network trouble, 5xx and 429 may pass; other answers not.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from providers import netguard
from providers.config import NetworkPolicy
from providers.errors import (
    ConnectionRefused,
    ConnectionTimedOut,
    ProtocolError,
    ProviderError,
    server_said,
)

# Reused, not copied: the transport that connects only to the address netguard allowed.
from providers.guarded_http import GuardedTransport

SIGNATURE_HEADER = "X-Postroom-Signature"
TIMESTAMP_HEADER = "X-Postroom-Timestamp"
DELIVERY_HEADER = "X-Postroom-Delivery"
USER_AGENT = "Postroom-Webhook/1"
DEFAULT_TIMEOUT = 10.0
# A Retry-After longer than this is read as this: an endpoint cannot park a delivery for weeks.
MAX_RETRY_AFTER = 24 * 3600.0


class WebhookFailed(ProviderError):
    """The endpoint did not take the delivery; `retry_after` is what it asked us to wait."""

    kind = "webhook"

    def __init__(
        self, message: str, *, permanent: bool | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, permanent=permanent)
        self.retry_after = retry_after

    def __reduce__(self):
        return (
            type(self),
            (self.message,),
            {"permanent": self.permanent, "retry_after": self.retry_after},
        )


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    body: bytes
    delivery_id: str
    secret: str = field(default="", repr=False)
    timeout: float = DEFAULT_TIMEOUT


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """sha256=<hex> of HMAC-SHA256(secret, "<timestamp>." + body); the timestamp is signed so
    a captured request cannot be replayed later with a fresh one."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def webhook_url_check(url: str, policy: NetworkPolicy) -> None:
    """Raise AddressBlocked / HostNotFound when the URL's host is not somewhere to POST to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookFailed(f"{url} is not an http(s) URL.", permanent=True)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    netguard.resolve_allowed(parts.hostname, port, policy)


def webhook_post(request: WebhookRequest, policy: NetworkPolicy, *, now=time.time) -> int:
    """POST the body; the HTTP status when the endpoint took it (2xx). Raises WebhookFailed
    for any other answer, netguard's AddressBlocked or HostNotFound, or a network error."""
    timestamp = str(int(now()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: timestamp,
        DELIVERY_HEADER: request.delivery_id,
    }
    if request.secret:
        headers[SIGNATURE_HEADER] = webhook_signature(request.secret, timestamp, request.body)
    try:
        with httpx.Client(
            transport=GuardedTransport(policy),
            timeout=request.timeout,
            follow_redirects=False,  # a redirect could lead anywhere netguard did not see
            trust_env=False,  # an environment proxy would bypass netguard
        ) as client:
            response = client.post(request.url, content=request.body, headers=headers)
    except httpx.HTTPError as exc:
        raise _unreachable(request, exc) from exc
    return _judge(response)


def _judge(response: httpx.Response) -> int:
    status = response.status_code
    if response.is_success:
        return status
    said = server_said(response.text[:500]) or response.reason_phrase
    if response.is_redirect:
        where = response.headers.get("Location", "")
        raise WebhookFailed(
            f"The webhook answered HTTP {status} (a redirect to {where or 'nowhere'}), which "
            "Postroom does not follow: enter the final URL.",
            permanent=True,
        )
    if status == 429 or status >= 500:
        raise WebhookFailed(
            f"The webhook answered HTTP {status} ({said}); Postroom will retry.",
            permanent=False,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    raise WebhookFailed(
        f"The webhook answered HTTP {status} ({said}): it refused the delivery; not retried.",
        permanent=True,
    )


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return min(max(0.0, (when - current).total_seconds()), MAX_RETRY_AFTER)


def _unreachable(request: WebhookRequest, exc: httpx.HTTPError) -> ProviderError:
    parts = urlsplit(request.url)
    where = f"{parts.hostname} port {parts.port or (443 if parts.scheme == 'https' else 80)}"
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionTimedOut(
            f"The webhook at {where} did not answer within {request.timeout:g} s."
        )
    if isinstance(exc, httpx.ConnectError):
        return ConnectionRefused(f"Could not connect to the webhook at {where} ({exc}).")
    return ProtocolError(f"The request to the webhook at {where} failed ({exc}).")
