"""Many machines: 4 Celery workers, beat and 2 listeners share 200 channels on PostgreSQL and Redis.

What an operator scaling out must be able to trust: no channel is polled by two workers at once,
every message is stored once, and a worker or a listener that dies (SIGKILL, as when its machine
goes) loses nothing. The proof of "at once" comes from the mail server, not from Postroom: the
Dovecot log has every session's login and logout, so overlapping sessions of one account show.
Half the channels are POP3 (polled only, so an account never has two sessions); half are IMAP on
push, where the listener's IDLE session is one more (so never more than two).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import re
import signal
import subprocess
import time
import warnings
from collections import defaultdict
from datetime import datetime

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection

from channels_app.celery import app as celery_app
from channels_app.launcher import role_argv
from mailboxes.models import InboundMessage, Mailbox
from pollers.tasks import poll_mailbox
from tests.launch import ROOT, wait_until
from tests.pollers.conftest import message
from tests.pollers.listening import child_environ

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.backends,
    pytest.mark.timeout(400),
]

CHANNELS_PER_PROTOCOL = 100
TRAFFIC_SECONDS = 40
# Short leases and safety-net polls, so what a dead worker or listener held is picked up within
# the test; listener leases not so short that a busy machine's slow renewal looks like a death.
FAST = {
    "POSTROOM_POLL_LEASE_SECONDS": "10",
    "POSTROOM_IDLE_SAFETY_POLL_SECONDS": "15",
    "POSTROOM_IDLE_LEASE_SECONDS": "10",
}


@pytest.fixture
def on_postgresql_and_redis():
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("runs on PostgreSQL and Redis: `python -m tests.backends` (make test does)")
    celery_app.control.purge()  # tasks other tests queued for channels long gone
    # Transactional tests before this one emptied every table, with the beat schedule the data
    # migrations wrote: put back the entry this test needs, beat's dispatcher.
    importlib.import_module("pollers.migrations.0001_dispatch_schedule").create(django_apps, None)


class Processes:
    """Workers and beat as their own process groups, so a kill takes a whole "machine"."""

    def __init__(self, var_dir):
        self.var_dir = var_dir
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        env = child_environ(
            self.var_dir, eager=False, CELERY_BROKER_URL=settings.CELERY_BROKER_URL, **FAST
        )
        with (self.var_dir / f"{name}.log").open("wb") as out:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()  # a warm shutdown: the worker finishes its task first
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            # Whatever of the "machine" is left (a pool child its parent did not take down) goes
            # too: it would hold a mail session open past the end of the test.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def processes(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTROOM_WORKER_CONCURRENCY", "1")  # read by role_argv
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def test_four_workers_and_two_listeners_poll_each_channel_alone_and_lose_nothing(
    on_postgresql_and_redis, dovecot, make_channel, listen, processes
):
    workers = [
        processes.start(f"worker{n}", [*role_argv("worker"), "-n", f"worker{n}@%h"])
        for n in range(4)
    ]
    processes.start("beat", role_argv("beat"))
    users, accounts, channels = {}, {}, defaultdict(list)  # accounts: name -> protocol
    for protocol in ("imap", "pop3"):
        for _ in range(CHANNELS_PER_PROTOCOL):
            user = dovecot.add_user()
            mailbox = make_channel(user, protocol=protocol, refresh_interval=30)
            users[mailbox.pk], accounts[user.name] = user, protocol
            channels[protocol].append(mailbox)
    listeners = [
        listen(eager=False, CELERY_BROKER_URL=settings.CELERY_BROKER_URL, **FAST) for _ in range(2)
    ]
    _wait_until_connected(channels)

    delivered = _traffic(dovecot, users, channels, kill=[workers[0], listeners[0]])

    _wait_until_stored(delivered)
    processes.stop_all()
    for listener in listeners[1:]:
        listener.stop()
    for mailbox_id, ids in delivered.items():
        rows = InboundMessage.objects.filter(mailbox_id=mailbox_id)
        assert sorted(rows.values_list("message_id", flat=True)) == sorted(ids), mailbox_id
    sessions, unended = _session_spans(dovecot.log_path, accounts)
    assert len(unended) <= MAX_UNENDED, "\n".join(unended)
    assert {user for user, _protocol in sessions} == set(accounts)  # every channel was polled
    most = {key: _most_at_once(spans) for key, spans in sessions.items()}
    assert max(n for (_user, protocol), n in most.items() if protocol == "pop3") == 1
    assert max(n for (_user, protocol), n in most.items() if protocol == "imap") <= 2


def _wait_until_connected(channels: dict[str, list[Mailbox]]) -> None:
    """Every channel's first poll ran: mail delivered from now on is new mail."""
    everyone = [m.pk for group in channels.values() for m in group]
    wait_until(
        lambda: (
            Mailbox.objects.filter(pk__in=everyone, cursor_set_at__isnull=False).count()
            == len(everyone)
        ),
        timeout=120,
        what="every channel's first poll",
    )


def _traffic(dovecot, users, channels, *, kill) -> dict[int, list[str]]:
    """Mail for random channels, extra polls asked for at once (an administrator's "refresh
    now" clicked twice, a redelivered task), and the kills a third and two thirds through."""
    everyone = [m for group in channels.values() for m in group]
    delivered: dict[int, list[str]] = defaultdict(list)  # channel -> Message-IDs
    started, n = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < TRAFFIC_SECONDS:
        for mailbox in random.sample(everyone, 3):
            n += 1
            raw = message(n, subject="Machines")
            dovecot.deliver(users[mailbox.pk], raw)
            delivered[mailbox.pk].append(MESSAGE_ID.search(raw).group(1).decode())
        for mailbox in random.sample(channels["pop3"], 2):
            for _ in range(3):
                poll_mailbox.delay(mailbox.pk)
        if kill and elapsed > TRAFFIC_SECONDS * (3 - len(kill)) / 3:
            _kill(kill.pop(0))
        time.sleep(0.5)
    return delivered


def _kill(process) -> None:
    if isinstance(process, subprocess.Popen):
        os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool: a machine gone
        process.wait()
    else:
        process.kill()  # a listener


def _wait_until_stored(delivered: dict[int, list[str]]) -> None:
    total = sum(len(ids) for ids in delivered.values())
    rows = InboundMessage.objects.filter(mailbox__in=list(delivered))
    try:
        wait_until(lambda: rows.count() >= total, timeout=150, what=f"{total} messages stored")
    except AssertionError:
        missing = [
            pk for pk, ids in delivered.items() if rows.filter(mailbox=pk).count() < len(ids)
        ]
        states = Mailbox.objects.filter(pk__in=missing).values(
            "pk", "protocol", "push_state", "lease_owner", "last_polled_at", "last_error"
        )
        raise AssertionError(f"{rows.count()} of {total} stored; short: {list(states)}") from None


MESSAGE_ID = re.compile(rb"Message-ID: (<[^>]+>)")
PROBLEM = re.compile(r": (Warning|Error|Fatal|Panic):")
MAX_UNENDED = 3  # sessions Dovecot never logs the end of (see _session_spans)
LOGIN = re.compile(r"^(\S+) (imap|pop3)-login: Info: Login: user=<([^>]+)>.*session=<([^>]+)>")
LOGOUT = re.compile(r"^(\S+) (imap|pop3)\(([^)]+)\)<\d+><([^>]+)>: Info: Disconnected")


def _session_spans(log_path, accounts) -> tuple[dict, list[str]]:
    """(account, protocol) -> [(login, logout)] from the Dovecot log, once it has logged every
    session's end (a Dovecot process busy with a Maildir lock notices its client left only
    after); and the sessions it never logs an end for, which cannot be measured.

    Those happen: now and then an IMAP process that logged in (over TLS, through a login
    process that proxies it) never logs anything again, though every Postroom process is gone
    (in some runs, one or two among ~1,500 sessions; never a POP3 one so far). They are left
    out of the count, described in the returned lines and a warning, and the test allows only
    MAX_UNENDED of them.
    """
    deadline = time.monotonic() + 60
    while True:
        log = log_path.read_text()
        starts, ends = _session_lines(log, accounts)
        left_open = set(starts) - set(ends)
        if not left_open or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    sessions = defaultdict(list)
    for session, (user, protocol, start) in starts.items():
        if session in ends:
            sessions[user, protocol].append((start, ends[session]))
    if not left_open:
        return sessions, []
    unended = [line for line in log.splitlines() if any(f"<{s}>" in line for s in left_open)]
    problems = [line for line in log.splitlines() if re.search(PROBLEM, line)]
    report = (
        f"Dovecot never logged the end of {len(left_open)} session(s):\n"
        + "\n".join(unended[:40])
        + "\nDovecot's warnings and errors:\n"
        + "\n".join(problems[-40:])
        + "\nProcesses:\n"
        + _processes()
    )
    warnings.warn(report, stacklevel=2)
    return sessions, unended


def _processes() -> str:
    done = subprocess.run(["ps", "-eo", "pid,pgid,etimes,args"], capture_output=True, text=True)
    wanted = ("celery", "manage.py", "/imap", "/pop3")  # Dovecot's are "<instance>/imap"
    return "\n".join(line for line in done.stdout.splitlines() if any(w in line for w in wanted))


def _session_lines(log: str, accounts: dict[str, str]) -> tuple[dict, dict]:
    """Session id -> (account, protocol, login time), and session id -> logout time."""
    starts, ends = {}, {}
    for line in log.splitlines():
        if (found := LOGIN.match(line)) and accounts.get(found[3]) == found[2]:
            starts[found[4]] = (found[3], found[2], _stamp(found[1]))
        elif (found := LOGOUT.match(line)) and accounts.get(found[3]) == found[2]:
            ends[found[4]] = _stamp(found[1])
    return starts, ends


def _stamp(text: str) -> datetime:
    return datetime.strptime(text, "%H:%M:%S.%f")


def _most_at_once(spans: list[tuple]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in events:  # at equal times the logout (-1) sorts first
        current += step
        most = max(most, current)
    return most
