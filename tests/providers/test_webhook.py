"""A webhook POST reaches a real local HTTP endpoint signed, and every answer is judged right."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from providers.errors import AddressBlocked, ConnectionRefused, ConnectionTimedOut
from providers.webhook import (
    WebhookFailed,
    WebhookRequest,
    retry_after_seconds,
    webhook_post,
    webhook_url_check,
)
from tests.providers.conftest import LOOPBACK_BLOCKED, POLICY, SHORT_TIMEOUT

BODY = json.dumps({"schema": "postroom.email.v1", "message": {"subject": "Hi"}}).encode()
SECRET = "whsec-correct-horse"


def request(url: str, **fields) -> WebhookRequest:
    return WebhookRequest(url=url, body=BODY, delivery_id="42", secret=SECRET, **fields)


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does, written from docs/webhooks.md rather than from the sender."""
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(f"sha256={expected.hexdigest()}", signature)


def test_it_posts_the_body_as_is_with_a_signature_the_receiver_can_check(http_sink):
    assert webhook_post(request(http_sink.url()), POLICY, now=lambda: 1_790_000_000) == 200

    (got,) = http_sink.requests
    assert (got.method, got.path, got.body) == ("POST", "/hook", BODY)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-postroom-delivery"] == "42"
    assert got.headers["x-postroom-timestamp"] == "1790000000"
    assert verify(SECRET, "1790000000", BODY, got.headers["x-postroom-signature"])
    assert not verify("another secret", "1790000000", BODY, got.headers["x-postroom-signature"])
    assert SECRET not in str(got.headers)


def test_without_a_secret_it_posts_unsigned(http_sink):
    webhook_post(WebhookRequest(url=http_sink.url(), body=BODY, delivery_id="1"), POLICY)

    assert "x-postroom-signature" not in http_sink.requests[0].headers


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_worth_retrying(http_sink, status):
    http_sink.respond(status, body=b"database down")

    with pytest.raises(WebhookFailed) as caught:
        webhook_post(request(http_sink.url()), POLICY)

    assert not caught.value.permanent
    assert f"HTTP {status} (database down)" in str(caught.value)


def test_too_many_requests_is_retried_after_what_the_endpoint_asked(http_sink):
    http_sink.respond(429, headers={"Retry-After": "120"})

    with pytest.raises(WebhookFailed) as caught:
        webhook_post(request(http_sink.url()), POLICY)

    assert not caught.value.permanent and caught.value.retry_after == 120


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_another_client_error_is_final_with_the_reason(http_sink, status):
    http_sink.respond(status, body=b"no such hook")

    with pytest.raises(WebhookFailed) as caught:
        webhook_post(request(http_sink.url()), POLICY)

    assert caught.value.permanent
    assert f"HTTP {status} (no such hook)" in str(caught.value)
    assert "not retried" in str(caught.value)


def test_a_redirect_is_not_followed(http_sink):
    http_sink.respond(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    with pytest.raises(WebhookFailed) as caught:
        webhook_post(request(http_sink.url()), POLICY)

    assert caught.value.permanent and "does not follow" in str(caught.value)
    assert len(http_sink.requests) == 1


def test_a_slow_endpoint_times_out_and_may_be_retried(http_sink):
    http_sink.respond(200, delay=SHORT_TIMEOUT * 4)

    with pytest.raises(ConnectionTimedOut) as caught:
        webhook_post(request(http_sink.url(), timeout=SHORT_TIMEOUT), POLICY)

    assert not caught.value.permanent


def test_nothing_listening_may_be_retried(closed_port):
    with pytest.raises(ConnectionRefused) as caught:
        webhook_post(request(f"http://127.0.0.1:{closed_port}/hook"), POLICY)

    assert not caught.value.permanent


def test_a_blocked_network_is_refused_before_connecting(http_sink):
    with pytest.raises(AddressBlocked) as caught:
        webhook_post(request(http_sink.url()), LOOPBACK_BLOCKED)

    assert caught.value.permanent
    assert http_sink.requests == []


def test_a_name_whose_dns_answer_is_blocked_is_refused(http_sink, fake_dns):
    fake_dns("hooks.example.com", ["169.254.169.254"])

    with pytest.raises(AddressBlocked) as caught:
        webhook_url_check("https://hooks.example.com/in", POLICY)
    assert "hooks.example.com resolves to 169.254.169.254" in str(caught.value)

    # At send time too: the name is looked up again, and a rebinding answer is judged again.
    fake_dns("hooks.example.com", ["169.254.169.254"])
    url = f"http://hooks.example.com:{http_sink.port}/hook"
    with pytest.raises(AddressBlocked):
        webhook_post(request(url), POLICY)
    assert http_sink.requests == []


def test_a_name_pointing_to_an_allowed_address_is_posted_to(http_sink, fake_dns):
    fake_dns("hooks.example.com", ["127.0.0.1"])

    webhook_post(request(f"http://hooks.example.com:{http_sink.port}/hook"), POLICY)

    assert http_sink.requests[0].headers["host"] == f"hooks.example.com:{http_sink.port}"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30),
        ("Thu, 01 Jan 2026 00:01:00 GMT", 60),
        ("Thu, 01 Jan 2026 00:00:00 GMT", 0),
        ("9999999", 24 * 3600),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(value, seconds):
    assert retry_after_seconds(value, now=1_767_225_600) == seconds  # 2026-01-01 00:00 UTC
