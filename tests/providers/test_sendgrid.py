"""An administrator tests a SendGrid channel: the API token must be accepted and may send."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from providers.checks import sendgrid_check
from providers.config import SendGridSettings
from providers.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    HostNotFound,
    ProtocolError,
)
from tests.providers.conftest import TIMEOUT

GOOD_TOKEN = "SG.good-token"
READ_ONLY_TOKEN = "SG.read-only-token"
MOVED_TOKEN = "SG.moved-token"


class FakeSendGrid(BaseHTTPRequestHandler):
    """Answers GET /v3/scopes the way api.sendgrid.com does, per token."""

    requests: list[tuple[str, str]]  # (path, Authorization header), set per server

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.server.requests.append((self.path, auth))  # type: ignore[attr-defined]
        if self.path == "/moved/v3/scopes":
            return self.reply(200, {"scopes": ["mail.send"]})
        if self.path != "/v3/scopes":
            return self.reply(404, {"errors": [{"field": None, "message": "not found"}]})
        if auth == f"Bearer {GOOD_TOKEN}":
            return self.reply(200, {"scopes": ["mail.send", "user.profile.read"]})
        if auth == f"Bearer {READ_ONLY_TOKEN}":
            return self.reply(200, {"scopes": ["user.profile.read"]})
        if auth == f"Bearer {MOVED_TOKEN}":
            return self.reply(302, {}, location="/moved/v3/scopes")
        return self.reply(401, {"errors": [{"field": None, "message": "authorization required"}]})

    def reply(self, status: int, body: dict, location: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet


@pytest.fixture
def sendgrid() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSendGrid)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(TIMEOUT)


def settings(server: ThreadingHTTPServer, token: str) -> SendGridSettings:
    host, port = server.server_address[:2]
    return SendGridSettings(api_token=token, api_url=f"http://{host}:{port}/")


def test_it_accepts_a_token_that_may_send_mail(sendgrid):
    assert sendgrid_check(settings(sendgrid, GOOD_TOKEN), timeout=TIMEOUT) is None
    assert sendgrid.requests == [("/v3/scopes", f"Bearer {GOOD_TOKEN}")]


def test_it_reports_a_refused_token_in_sendgrids_words(sendgrid):
    with pytest.raises(AuthenticationFailed) as caught:
        sendgrid_check(settings(sendgrid, "SG.wrong-token"), timeout=TIMEOUT)

    assert str(caught.value).startswith("SendGrid refused the API token: authorization required.")
    assert "SG.wrong-token" not in str(caught.value)


def test_it_wants_the_mail_send_permission(sendgrid):
    with pytest.raises(AuthenticationFailed, match="lacks the Mail Send permission"):
        sendgrid_check(settings(sendgrid, READ_ONLY_TOKEN), timeout=TIMEOUT)


def test_it_does_not_follow_a_redirect_with_the_token(sendgrid):
    with pytest.raises(ProtocolError, match="redirect \\(HTTP 302\\)") as caught:
        sendgrid_check(settings(sendgrid, MOVED_TOKEN), timeout=TIMEOUT)

    assert [path for path, _auth in sendgrid.requests] == ["/v3/scopes"]
    assert caught.value.permanent


def test_it_reports_an_unexpected_answer_with_its_status(sendgrid):
    wrong_path = SendGridSettings(GOOD_TOKEN, api_url=settings(sendgrid, "").api_url + "x")

    with pytest.raises(ProtocolError, match="SendGrid answered HTTP 404 \\(not found\\)"):
        sendgrid_check(wrong_path, timeout=TIMEOUT)


def test_it_says_nothing_answers_on_a_closed_port(closed_port):
    config = SendGridSettings(api_token=GOOD_TOKEN, api_url=f"http://127.0.0.1:{closed_port}")

    with pytest.raises(ConnectionRefused, match=f"Nothing answers on 127.0.0.1 port {closed_port}"):
        sendgrid_check(config, timeout=TIMEOUT)


def test_it_says_an_unknown_host_cannot_be_found():
    config = SendGridSettings(api_token=GOOD_TOKEN, api_url="http://nonexistent.invalid")

    with pytest.raises(HostNotFound, match="nonexistent.invalid could not be found"):
        sendgrid_check(config, timeout=TIMEOUT)
