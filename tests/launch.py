"""Postroom's launcher (what `make run` starts) in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers.net import free_port

ROOT = Path(__file__).resolve().parents[1]


class Launch:
    """The launcher in a subprocess, its output collected in a file we can poll."""

    def __init__(self, var_dir: Path, port: int, **environ: str):
        self.log = var_dir / f"launcher-{time.monotonic_ns()}.log"
        env = _environ(var_dir, POSTROOM_PORT=str(port), **environ)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "channels_app.launcher"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.output()):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"never saw {pattern!r}; output:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def launch(tmp_path):
    launches: list[Launch] = []

    def start(**environ: str) -> Launch:
        launches.append(Launch(tmp_path, free_port(), **environ))
        return launches[-1]

    yield start
    for item in launches:
        if item.process.poll() is None:
            os.killpg(item.process.pid, signal.SIGKILL)


def _environ(var_dir: Path, **environ: str) -> dict[str, str]:
    """The laptop defaults in a private var/ (no .env, no outside database or broker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "POSTROOM_"))}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        DEBUG="true",
        POSTROOM_VAR_DIR=str(var_dir),
        POSTROOM_WORKER_CONCURRENCY="1",
        DJANGO_SETTINGS_MODULE="channels_app.settings",
    )
    env.update(environ)
    return env


def run_manage(var_dir: Path, code: str, **environ: str) -> str:
    """Run Python in a `manage.py shell` against the launcher's database; return its stdout."""
    env = _environ(var_dir, **environ)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def query(var_dir: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(var_dir / "postroom.sqlite3", timeout=30) as db:
        return db.execute(sql, params).fetchall()


def wait_until(check, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
