"""Every test fails if its log output holds a secret or a message body (issue 11).

Secrets are what the test wrote to an EncryptedTextField (channel passwords, tokens, client
and webhook secrets, whichever way they got there) plus the deployment's keys; bodies are the
text lines of every message the test delivered to Dovecot. Only lines long enough to be
unmistakable count (short ones like "secret" or "Hi" occur in ordinary log text), and the test
servers' own loggers are left out: they log what they received on purpose.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re

import pytest

MIN_SECRET = 8
# Encrypted for privacy, but not secrets: a log may well say when a token expires.
NOT_SECRETS = {"oauth_token_expires", "oauth_scopes"}
MIN_LINE = 20
TEST_SERVER_LOGGERS = ("mail.log", "tests.")  # aiosmtpd logs the SMTP dialogue it serves
_WORDS = re.compile(r"[A-Za-z ]+")  # a secret of letters only may be an ordinary word


class _Capture(logging.Handler):
    """The formatted text (message and traceback) of every record Postroom's code logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(TEST_SERVER_LOGGERS):
            self.texts.append(self.format(record))


def body_lines(raw: bytes) -> set[str]:
    """The long lines of a message's text parts, decoded as a reader would see them."""
    lines: set[str] = set()
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for part in message.walk():
            if part.get_content_maintype() == "text":
                lines.update(line.strip() for line in part.get_content().splitlines())
    except Exception:  # noqa: BLE001 - corpus mail may not parse: nothing to look for then
        return set()
    return {line for line in lines if len(line) >= MIN_LINE}


def secret_like(value: object) -> bool:
    return isinstance(value, str) and len(value) >= MIN_SECRET and not _WORDS.fullmatch(value)


@pytest.fixture(autouse=True)
def no_secrets_or_bodies_in_logs(monkeypatch):
    from mailboxes.fields import EncryptedTextField
    from tests.servers.dovecot import Dovecot

    secrets: set[str] = set()
    delivered: list[bytes] = []  # parsed only if something was logged: most tests log nothing
    encrypt = EncryptedTextField.get_prep_value

    def recording_encrypt(field, value):
        if field.name not in NOT_SECRETS and secret_like(value):
            secrets.add(value)
        return encrypt(field, value)

    monkeypatch.setattr(EncryptedTextField, "get_prep_value", recording_encrypt)
    for name in ("deliver", "append"):
        monkeypatch.setattr(Dovecot, name, _recording(getattr(Dovecot, name), delivered))

    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield
    finally:
        root.removeHandler(capture)
    if not capture.texts:
        return
    secrets.update(_deployment_secrets())
    bodies = {line for raw in delivered for line in body_lines(raw)}
    leaks = _leaks(capture.texts, secrets, bodies)
    if leaks:
        pytest.fail("The log output contains " + "; ".join(leaks), pytrace=False)


def _recording(deliver, delivered: list[bytes]):
    def recording_deliver(self, user, raw, *args, **kwargs):
        delivered.append(raw)
        return deliver(self, user, raw, *args, **kwargs)

    return recording_deliver


def _deployment_secrets() -> set[str]:
    from django.conf import settings

    values = [settings.SECRET_KEY, *settings.POSTROOM_ENCRYPTION_KEYS]
    values.append(getattr(settings, "POSTROOM_METRICS_TOKEN", ""))
    return {value for value in values if secret_like(value)}


def _leaks(texts: list[str], secrets: set[str], bodies: set[str]) -> list[str]:
    found = []
    for text in texts:
        if secret := next((s for s in secrets if s in text), None):
            shown = text.replace(secret, f"{secret[:3]}…")  # the report is output too
            found.append(f"a secret ({secret[:3]}…) in: {shown[:300]!r}")
        elif line := next((b for b in bodies if b in text), None):
            found.append(f"a message body line ({line[:40]!r}) in: {text[:300]!r}")
    return found
