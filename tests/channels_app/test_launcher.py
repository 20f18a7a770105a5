"""`make run`: one command brings up web, worker and beat, and Ctrl-C takes them all down."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers.net import free_port

ROOT = Path(__file__).resolve().parents[2]


class Launch:
    """The launcher in a subprocess, its output collected in a file we can poll."""

    def __init__(self, var_dir: Path, port: int, **environ: str):
        self.log = var_dir / f"launcher-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "POSTROOM_"))}
        env.update(
            DEBUG="true",
            POSTROOM_VAR_DIR=str(var_dir),
            POSTROOM_PORT=str(port),
            POSTROOM_WORKER_CONCURRENCY="1",
            DJANGO_SETTINGS_MODULE="channels_app.settings",
        )
        env.update(environ)
        env.pop("DATABASE_URL", None)
        env.pop("CELERY_BROKER_URL", None)
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


def log_in(base_url: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        page = client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return client.post(
            "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": password},
            follow_redirects=True,
        )


def test_it_serves_the_admin_with_worker_and_beat_running_and_stops_all(launch, tmp_path):
    run = launch()
    url = run.wait_for(r"running at (http://\S+)/admin/").group(1)
    login, password = run.wait_for(r"Admin login: (\S+) / (\S+)").groups()
    run.wait_for(r"celery@\S+ ready")
    run.wait_for(r"beat: Starting")

    dashboard = log_in(url, login, password)
    assert dashboard.status_code == 200
    assert "Site administration" in dashboard.text
    assert log_in(url, login, "not-the-password").url.path == "/admin/login/"

    assert run.stop() == 0
    assert "stopped" in run.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/admin/login/", timeout=2)


def test_a_second_run_reuses_everything_and_creates_no_second_admin(launch, tmp_path):
    first = launch(POSTROOM_ADMIN_USER="alice", POSTROOM_ADMIN_PASSWORD="first-run-pass")
    first.wait_for(r"Admin login: alice / first-run-pass")
    first.wait_for(r"celery@\S+ ready")
    first.stop()

    second = launch()
    url = second.wait_for(r"running at (http://\S+)/admin/").group(1)
    second.wait_for(r"Admin login: alice \(password set earlier")
    assert log_in(url, "alice", "first-run-pass").status_code == 200
    second.stop()

    with sqlite3.connect(tmp_path / "postroom.sqlite3") as db:
        assert db.execute("select count(*) from auth_user").fetchone()[0] == 1
