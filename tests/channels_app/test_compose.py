"""docker-compose.yml: no engine runs here, so check that every command it runs exists."""

from __future__ import annotations

from pathlib import Path

import yaml

from channels_app.launcher import ROLES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


POSTROOM_SERVICES = ("web", "worker", "beat", "listener")


def test_it_runs_web_worker_beat_and_listener_on_postgresql_and_redis():
    assert {*POSTROOM_SERVICES, "postgres", "redis"} <= set(SERVICES)
    for name in POSTROOM_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
        assert env["DEBUG"] == "false"


def test_every_postroom_service_runs_a_launcher_role_that_exists():
    for name in POSTROOM_SERVICES:
        command = SERVICES[name]["command"]
        assert command[:3] == ["python", "-m", "channels_app.launcher"], name
        assert command[3] in ROLES, f"{name} runs unknown role {command[3]!r}"


def test_every_service_with_state_has_a_named_volume_and_a_health_check():
    for name in ("postgres", "redis", "web", "worker"):
        assert "healthcheck" in SERVICES[name], name
    for name in ("postgres", "redis", "web"):
        for volume in SERVICES[name]["volumes"]:
            assert volume.split(":")[0] in COMPOSE["volumes"], (name, volume)


def test_the_image_copies_only_what_exists():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
