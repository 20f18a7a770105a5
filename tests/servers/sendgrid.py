"""A local SendGrid Web API v3 for tests: POST /v3/mail/send and GET /v3/scopes.

It checks a mail-send request the way SendGrid documents it (Bearer token, JSON body,
personalizations with a "to", unique recipients, from, subject, content with text/plain first,
base64 attachments with a filename, no reserved custom headers) and answers 202 Accepted with
an X-Message-Id, or 400 with SendGrid's error body: {"errors": [{"message", "field", "help"}]}.
401, 403, 413, 429 and 5xx come on demand (`fail_next`), with the same body shape and, for
429, Retry-After and X-RateLimit-* headers. Every request is recorded.

The session-scoped ``sendgrid_server`` starts it once; tests use the function-scoped
``sendgrid_api``, which resets requests, planned failures and tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HOST = "127.0.0.1"
GOOD_TOKEN = "SG.test-token.mail-send"
READ_ONLY_TOKEN = "SG.test-token.read-only"
# SendGrid's reserved keys for "headers" (it sets them itself), compared case-insensitively.
RESERVED_HEADERS = (
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
)
MAX_RECIPIENTS = 1000
EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
# The wording SendGrid uses in these answers.
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
FORBIDDEN = "access forbidden"
TOO_MANY = "too many requests"
DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    413: "The JSON payload you have included in your request is too large.",
    429: TOO_MANY,
    500: "internal error",
    502: "bad gateway",
    503: "service unavailable",
}


@dataclass(frozen=True)
class SendGridRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or None


@dataclass(frozen=True)
class Accepted:
    """A mail send the server answered 202 to."""

    message_id: str  # SendGrid's X-Message-Id, not the mail's Message-ID
    payload: dict


@dataclass(frozen=True)
class _Fault:
    status: int
    errors: list[dict]
    headers: dict[str, str]


class SendGridTestServer:
    host = HOST

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((HOST, 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self.port: int = self._httpd.server_address[1]
        self.reset()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- What the tests arrange and read ---------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.requests: list[SendGridRequest] = []
            self.accepted: list[Accepted] = []
            self._faults: deque[_Fault] = deque()
            self.tokens = {GOOD_TOKEN: ["mail.send", "user.profile.read"]}
            self.tokens[READ_ONLY_TOKEN] = ["user.profile.read"]

    def fail_next(
        self,
        status: int,
        message: str | None = None,
        *,
        field: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` mail sends get this status and a SendGrid error body."""
        if status < 400:
            raise ValueError(f"a failure needs a 4xx or 5xx status, not {status}")
        errors = [_error(message or DEFAULT_MESSAGES.get(status, "error"), field)]
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if status == 429:
            headers.update({"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"})
        with self._lock:
            self._faults.extend([_Fault(status, errors, headers)] * times)

    def take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def record(self, request: SendGridRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def accept(self, payload: dict) -> str:
        message_id = uuid.uuid4().hex[:22]
        with self._lock:
            self.accepted.append(Accepted(message_id, payload))
        return message_id

    def scopes(self, authorization: str) -> list[str] | None:
        token = authorization.removeprefix("Bearer ")
        if not authorization.startswith("Bearer "):
            return None
        with self._lock:
            return self.tokens.get(token)

    # --- Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="sendgrid-test-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as api.sendgrid.com

    @property
    def api(self) -> SendGridTestServer:
        return self.server.api  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._record(None)
        if self.path != "/v3/scopes":
            return self._errors(404, [_error("resource not found")])
        scopes = self.api.scopes(self.headers.get("Authorization", ""))
        if scopes is None:
            return self._errors(401, [_error(UNAUTHORIZED)])
        return self._json(200, {"scopes": scopes})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record(body)
        if self.path != "/v3/mail/send":
            return self._errors(404, [_error("resource not found")])
        scopes = self.api.scopes(self.headers.get("Authorization", ""))
        if scopes is None:
            return self._errors(401, [_error(UNAUTHORIZED)])
        if "mail.send" not in scopes:
            return self._errors(403, [_error(FORBIDDEN)])
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._errors(415, [_error("Content-Type should be application/json.")])
        if not isinstance(body, dict):
            return self._errors(400, [_error("Bad Request")])
        if (fault := self.api.take_fault()) is not None:
            return self._errors(fault.status, fault.errors, fault.headers)
        if errors := validate_mail_send(body):
            return self._errors(400, errors)
        message_id = self.api.accept(body)
        self._reply(202, b"", {"X-Message-Id": message_id})

    # --- Answers ---------------------------------------------------------------------------

    def _record(self, body: Any) -> None:
        headers = {name: value for name, value in self.headers.items()}
        self.api.record(SendGridRequest(self.command, self.path, headers, body))

    def _errors(self, status: int, errors: list[dict], headers: dict | None = None) -> None:
        self._json(status, {"errors": errors}, headers)

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._reply(status, json.dumps(body).encode(), headers)

    def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet test output


# --- The documented request contract ----------------------------------------------------------


def validate_mail_send(body: dict) -> list[dict]:
    """SendGrid's 400 errors for a mail-send body, in its words; empty when it is valid."""
    errors: list[dict] = []
    errors += _personalizations(body.get("personalizations"))
    errors += _address(body.get("from"), "from", required=True)
    if "reply_to" in body:
        errors += _address(body["reply_to"], "reply_to", required=True)
    every_has_subject = all(
        isinstance(p, dict) and p.get("subject") for p in body.get("personalizations") or [{}]
    )
    if not (isinstance(body.get("subject"), str) and body["subject"]) and not every_has_subject:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    errors += _content(body.get("content"))
    errors += _attachments(body.get("attachments", []))
    errors += _headers(body.get("headers", {}))
    return errors


def _personalizations(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        return [_error("You must have at least one personalization.", "personalizations")]
    if len(value) > 1000:
        return [_error("The personalization block is limited to 1000.", "personalizations")]
    errors: list[dict] = []
    total = 0
    for index, block in enumerate(value):
        where = f"personalizations.{index}"
        if not isinstance(block, dict) or not block.get("to"):
            errors.append(
                _error("The to parameter is required for all personalization objects.", where)
            )
            continue
        seen: set[str] = set()
        for key in ("to", "cc", "bcc"):
            addresses = block.get(key, [])
            if not isinstance(addresses, list):
                errors.append(_error(f"The {key} parameter must be an array.", f"{where}.{key}"))
                continue
            for n, address in enumerate(addresses):
                errors += _address(address, f"{where}.{key}.{n}", required=True)
                email = str(address.get("email", "")).lower() if isinstance(address, dict) else ""
                if email in seen:
                    errors.append(_duplicate(email, f"{where}.{key}", where))
                seen.add(email)
            total += len(addresses)
    if total > MAX_RECIPIENTS:
        errors.append(
            _error("There is a limit of 1000 total recipients (to + cc + bcc) per request.")
        )
    return errors


def _duplicate(email: str, field_name: str, where: str) -> dict:
    return _error(
        "Each email address in the personalization block should be unique between to, cc, and "
        f"bcc. We found the first duplicate instance of [{email}] in the {field_name} field.",
        where,
    )


def _address(value: Any, where: str, *, required: bool) -> list[dict]:
    if value is None and not required:
        return []
    if not isinstance(value, dict) or "email" not in value:
        return [
            _error(
                f"The {where} object must be provided for every email send. It is an object "
                "that requires the email parameter, but may also contain a name parameter.",
                where,
            )
        ]
    errors = []
    if not isinstance(value["email"], str) or not EMAIL.match(value["email"]):
        errors.append(_error("Does not contain a valid address.", f"{where}.email"))
    name = value.get("name")
    if name is not None and (not isinstance(name, str) or any(c in name for c in ";,\r\n")):
        errors.append(_error("The name can't contain ';', ',', or line breaks.", f"{where}.name"))
    return errors


def _content(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        return [
            _error(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        ]
    errors = []
    types = []
    for index, block in enumerate(value):
        if not isinstance(block, dict) or not isinstance(block.get("value"), str):
            errors.append(_error("The content value must be a string.", f"content.{index}"))
            continue
        if not block["value"]:
            errors.append(
                _error(
                    "The content value must be a string at least one character in length.",
                    f"content.{index}.value",
                )
            )
        types.append(block.get("type"))
    order = [t for t in types if t in ("text/plain", "text/html")]
    if order not in ([], ["text/plain"], ["text/html"], ["text/plain", "text/html"]) or (
        order and types[: len(order)] != order
    ):
        errors.append(
            _error(
                "If present, text/plain content must be first, followed by text/html, followed "
                "by any other content.",
                "content",
            )
        )
    return errors


def _attachments(value: Any) -> list[dict]:
    if not isinstance(value, list):
        return [_error("The attachments parameter must be an array.", "attachments")]
    errors = []
    for index, attachment in enumerate(value):
        where = f"attachments.{index}"
        if not isinstance(attachment, dict) or not attachment.get("filename"):
            errors.append(
                _error("The attachment filename parameter is required.", f"{where}.filename")
            )
            continue
        try:
            base64.b64decode(str(attachment.get("content", "")), validate=True)
        except binascii.Error:
            errors.append(
                _error("The attachment content must be base64 encoded.", f"{where}.content")
            )
    return errors


def _headers(value: Any) -> list[dict]:
    if not isinstance(value, dict):
        return [_error("The headers parameter must be a valid JSON object.", "headers")]
    errors = []
    for name, header in value.items():
        if name.lower() in RESERVED_HEADERS:
            errors.append(
                _error(f"The following header is reserved and cannot be used: {name}", "headers")
            )
        if not isinstance(header, str):
            errors.append(_error(f"Invalid type. Expected: string, given: {name}.", "headers"))
        elif "\r" in header or "\n" in header:
            errors.append(_error(f"The {name} header cannot contain line breaks.", "headers"))
    return errors


def _error(message: str, field: str | None = None) -> dict:
    return {"message": message, "field": field, "help": None}


@pytest.fixture(scope="session")
def sendgrid_server() -> Iterator[SendGridTestServer]:
    """One API for the whole run. Tests should use `sendgrid_api`, which resets it."""
    server = SendGridTestServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def sendgrid_api(sendgrid_server: SendGridTestServer) -> Iterator[SendGridTestServer]:
    """The session API with no requests, failures or extra tokens."""
    sendgrid_server.reset()
    yield sendgrid_server
    sendgrid_server.reset()
