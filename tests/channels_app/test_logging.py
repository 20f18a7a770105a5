"""Logs an operator can ship and search: JSON a line when asked, plain otherwise, each line
naming the channel and Celery task it is about, and never a password or a message body."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from channels_app.logging import ContextFilter, JsonFormatter, PlainFormatter
from mailboxes.models import Mailbox
from pollers.tasks import poll_mailbox
from tests.launch import ROOT
from tests.logcheck import _leaks, body_lines, secret_like
from tests.pollers import conftest as pollers
from tests.pollers.listening import child_environ

connected, make_channel, poll = pollers.connected, pollers.make_channel, pollers.poll
loopback_allowed = pollers.loopback_allowed


def poll_in_a_process(mailbox: Mailbox, tmp_path, **environ) -> list[str]:
    """`manage.py poll NAME` as an operator runs it; the lines it logged."""
    done = subprocess.run(
        [sys.executable, "manage.py", "poll", mailbox.name],
        cwd=ROOT,
        env=child_environ(tmp_path, **environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line for line in done.stderr.splitlines() if "pollers.schedule" in line]


@pytest.fixture
def refused(connected, transactional_db):
    """A connected channel whose password was changed on the server's side."""
    mailbox = connected()
    Mailbox.objects.filter(pk=mailbox.pk).update(password="changed-elsewhere-42")
    return mailbox


def test_json_logs_are_one_object_a_line_naming_the_channel(refused, tmp_path):
    [line] = poll_in_a_process(refused, tmp_path, LOG_FORMAT="json")

    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "pollers.schedule"
    assert entry["channel_id"] == refused.channel_id
    assert entry["channel"] == refused.name
    assert "poll failed" in entry["message"]
    assert "changed-elsewhere-42" not in line


def test_plain_logs_name_the_channel_too(refused, tmp_path):
    [line] = poll_in_a_process(refused, tmp_path)

    assert f"[channel_id={refused.channel_id} channel={refused.name}]" in line
    assert "WARNING pollers.schedule" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.django_db
def test_a_task_s_lines_carry_its_task_id(connected, settings):
    mailbox = connected()
    Mailbox.objects.filter(pk=mailbox.pk).update(password="changed-elsewhere-42")
    records: list[str] = []
    handler = logging.Handler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    handler.emit = lambda record: records.append(handler.format(record))
    logging.getLogger().addHandler(handler)
    try:
        result = poll_mailbox.apply(args=[mailbox.pk])  # as a worker runs it
    finally:
        logging.getLogger().removeHandler(handler)

    entries = [json.loads(r) for r in records if "poll failed" in r]
    assert entries, records
    assert entries[0]["task_id"] == result.id
    assert entries[0]["task"] == "pollers.poll_mailbox"
    assert entries[0]["channel_id"] == mailbox.channel_id


def test_lines_outside_a_channel_or_task_have_no_context():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    ContextFilter().filter(record)
    assert PlainFormatter().format(record).endswith(" INFO x: hello world")
    assert set(json.loads(JsonFormatter().format(record))) == {"time", "level", "logger", "message"}


def test_the_log_check_recognises_secrets_and_bodies_but_not_ordinary_words():
    raw = (
        b"From: a@example.org\r\nContent-Type: text/plain\r\n\r\n"
        b"Hi,\r\nmy account number is 12345678 and the kettle leaks.\r\n"
    )
    bodies = body_lines(raw)
    assert bodies == {"my account number is 12345678 and the kettle leaks."}
    assert not secret_like("password") and not secret_like("short-1")
    assert secret_like("pw-1a2b3c4d")

    clean = ["channel em-1: poll failed (auth): the server refused the password"]
    assert _leaks(clean, {"pw-1a2b3c4d"}, bodies) == []
    [leak] = _leaks(["login pw-1a2b3c4d refused"], {"pw-1a2b3c4d"}, bodies)
    assert "pw-1a2b3c4d" not in leak
    assert _leaks(["parsed: my account number is 12345678 and the kettle leaks."], set(), bodies)
