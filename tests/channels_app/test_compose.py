"""docker-compose.yml: no engine runs here, so check that every command it runs exists and that
what an operator relies on (health checks, shared storage, start order) is there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from django.conf import settings
from django.urls import resolve

from channels_app.launcher import ROLES, setup

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()

POSTROOM_SERVICES = ("migrate", "web", "worker", "beat", "listener")
LAUNCHER_SERVICES = ("worker", "beat", "listener")


def test_it_runs_web_worker_beat_and_listener_on_postgresql_and_redis():
    assert {*POSTROOM_SERVICES, "postgres", "redis"} <= set(SERVICES)
    for name in POSTROOM_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
        assert env["DEBUG"] == "false"


def test_worker_beat_and_listener_run_launcher_roles_that_exist():
    for name in LAUNCHER_SERVICES:
        command = SERVICES[name]["command"]
        assert command[:3] == ["python", "-m", "channels_app.launcher"], name
        assert command[3] in ROLES, f"{name} runs unknown role {command[3]!r}"


def test_web_is_gunicorn_on_the_projects_wsgi_app_with_whitenoise_for_static_files():
    command = SERVICES["web"]["command"]
    assert command[0] == "gunicorn"
    assert f"{command[1]}.application" == settings.WSGI_APPLICATION
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE
    assert "collectstatic --noinput" in DOCKERFILE  # the hashed files whitenoise serves


def test_schema_changes_run_once_before_any_postroom_process_starts():
    # The launcher's setup: migrate, then make sure the first administrator exists.
    assert SERVICES["migrate"]["command"] == [
        "python", "-c", "from channels_app.launcher import setup; setup()"
    ]  # fmt: skip
    assert callable(setup)
    for name in ("web", *LAUNCHER_SERVICES):
        needs = SERVICES[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["postgres"]["condition"] == "service_healthy", name


def test_every_long_running_service_has_a_health_check_that_can_run():
    for name in ("web", "worker", "beat", "listener", "postgres", "redis"):
        assert "healthcheck" in SERVICES[name], name
    web_check = " ".join(SERVICES["web"]["healthcheck"]["test"])
    path = re.search(r"http://localhost:8000(/[^'?\"]*)", web_check)[1]
    assert resolve(path).url_name == "healthz"
    for name, check in (("beat", "check_beat"), ("listener", "check_listener")):
        assert f"from channels_app.health import {check}" in " ".join(
            SERVICES[name]["healthcheck"]["test"]
        )


def test_stored_mail_and_attachments_are_on_one_volume_every_postroom_service_mounts():
    for name in POSTROOM_SERVICES:
        media = SERVICES[name]["environment"]["MEDIA_ROOT"]
        mounts = dict(volume.split(":")[::-1] for volume in SERVICES[name]["volumes"])
        assert mounts.get(media) == "postroom-media", name
    for name in ("postgres", "redis"):
        for volume in SERVICES[name]["volumes"]:
            assert volume.split(":")[0] in COMPOSE["volumes"], (name, volume)


def test_the_image_copies_only_what_exists():
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_every_postroom_service_writes_its_counters_in_one_folder_emptied_at_start():
    """Web's /metrics adds up the counters the workers, beat and listener wrote."""
    folders = set()
    for name in POSTROOM_SERVICES:
        folder = SERVICES[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        mounts = dict(volume.split(":")[::-1] for volume in SERVICES[name]["volumes"])
        folders.add((folder, mounts.get(folder)))
    [(folder, volume)] = folders
    assert volume in COMPOSE["volumes"], volume
    # A named volume (compose's `tmpfs:` is per container) of type tmpfs: mounted with the
    # first container that uses it, gone with the last, so every start begins empty.
    assert COMPOSE["volumes"][volume]["driver_opts"]["type"] == "tmpfs"
    assert "mode=1777" in COMPOSE["volumes"][volume]["driver_opts"]["o"]  # the image's user


def test_gunicorn_accepts_the_web_command_with_its_configuration_module(tmp_path):
    web = [arg for arg in SERVICES["web"]["command"] if "${" not in arg]
    docker_cmd = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)[1])
    config = "--config=python:channels_app.gunicorn_conf"
    assert config in web and config in docker_cmd
    checked = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", *web[1:]],
        cwd=ROOT,
        env={**os.environ, "POSTROOM_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
