"""`make run`: one command brings up web, worker and beat, and Ctrl-C takes them all down."""

from __future__ import annotations

import re
import sqlite3

import httpx
import pytest


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
