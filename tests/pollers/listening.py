"""`manage.py listen` in subprocesses against the test database, for the listener stories.

The tests create channels with the ORM (so they need a transactional database: the listener
reads what they committed) and watch what the listener writes back. By default polls run
eagerly inside the listener, so "stored" needs no worker; `eager=False` sends them to a broker
in the test's own var/ that nobody reads, when a test wants no connections but the IDLE ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from django.conf import settings

from mailboxes.models import InboundMessage, Mailbox
from tests.backends import database_url
from tests.launch import ROOT, wait_until

# Quick enough for a test: follow the channel table twice a second, leases of 3 s.
FAST = {"POSTROOM_IDLE_SYNC_SECONDS": "0.5", "POSTROOM_IDLE_LEASE_SECONDS": "3"}


def child_environ(var_dir: Path, *, eager: bool = True, **environ: str) -> dict[str, str]:
    """The environment of a process (listener, worker, beat) on the test database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "channels_app.settings",
        "DATABASE_URL": database_url(),
        "POSTROOM_VAR_DIR": str(var_dir),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "POSTROOM_ENCRYPTION_KEYS": ",".join(settings.POSTROOM_ENCRYPTION_KEYS),
        "POSTROOM_BLOCKED_NETWORKS": ",".join(settings.POSTROOM_BLOCKED_NETWORKS),
        "POSTROOM_CONNECT_TIMEOUT": str(settings.POSTROOM_CONNECT_TIMEOUT),
        "CELERY_TASK_ALWAYS_EAGER": "true" if eager else "false",
        "CELERY_BROKER_URL": "filesystem://",
        **FAST,
        **environ,
    }


class Listen:
    """One `manage.py listen` process."""

    def __init__(self, var_dir: Path, *, eager: bool = True, **environ: str) -> None:
        self.log = var_dir / f"listen-{time.monotonic_ns()}.log"
        env = child_environ(var_dir, eager=eager, **environ)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "listen"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        found = wait_until(
            lambda: re.search(r"IMAP IDLE\) as (\w+)", self.output()) or self._exited(),
            timeout=30,
            what="the listener to start",
        )
        self.owner = found.group(1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _exited(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the listener exited; output:\n{self.output()[-4000:]}")

    def held(self) -> set[int]:
        rows = Mailbox.objects.filter(idle_lease_owner=self.owner, push_state="push")
        return set(rows.values_list("pk", flat=True))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the listener did not stop; output:\n{self.output()[-4000:]}")


def wait_for_push(mailbox: Mailbox, *, after: datetime | None = None) -> datetime:
    """Until a listener has an IDLE running on the channel (a new one, given `after`)."""

    def on_push():
        mailbox.refresh_from_db()
        fresh = after is None or (mailbox.push_since and mailbox.push_since > after)
        return mailbox.push_state == "push" and fresh and mailbox.push_since

    return wait_until(on_push, timeout=30, what=f"{mailbox} to be on push")


def wait_for_stored(mailbox: Mailbox, count: int = 1) -> list[str]:
    """Until the channel has stored and processed `count` messages; their subjects."""

    def stored():
        rows = InboundMessage.objects.filter(mailbox=mailbox).order_by("pk")
        rows = rows.exclude(outcome=InboundMessage.Outcome.PENDING)
        subjects = list(rows.values_list("subject", flat=True))
        return len(subjects) >= count and subjects

    return wait_until(stored, timeout=30, what=f"{count} message(s) stored for {mailbox}")
