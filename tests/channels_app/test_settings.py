"""Settings: a laptop needs no environment; production refuses to start without real secrets."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection

LOAD_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
)


def start_django(var_dir: Path, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "POSTROOM_"))}
    env.update(DJANGO_SETTINGS_MODULE="channels_app.settings", POSTROOM_VAR_DIR=str(var_dir))
    env.update(environ)
    return subprocess.run(
        [sys.executable, "-c", LOAD_SETTINGS],
        cwd=var_dir,  # not the project: an .env there must not leak into the test
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_generates_development_keys_once_and_says_so(tmp_path):
    first = start_django(tmp_path, DEBUG="true")
    assert first.returncode == 0, first.stderr
    assert "generated a development key" in first.stderr
    for name in ("secret_key", "encryption_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    Fernet((tmp_path / "encryption_key").read_text().strip())  # a usable key

    second = start_django(tmp_path, DEBUG="true")
    assert second.stdout == first.stdout  # the same SECRET_KEY again
    assert "generated" not in second.stderr


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({}, "SECRET_KEY"),
        ({"SECRET_KEY": "x" * 50}, "POSTROOM_ENCRYPTION_KEYS"),
    ],
)
def test_it_refuses_to_start_in_production_without_real_keys(tmp_path, environ, missing):
    result = start_django(tmp_path, DEBUG="false", **environ)
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_it_reads_secrets_from_files_for_docker(tmp_path):
    (tmp_path / "sk").write_text("s" * 50 + "\n")
    (tmp_path / "ek").write_text(Fernet.generate_key().decode())
    result = start_django(
        tmp_path,
        DEBUG="false",
        SECRET_KEY_FILE=str(tmp_path / "sk"),
        POSTROOM_ENCRYPTION_KEYS_FILE=str(tmp_path / "ek"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "s" * 50


@pytest.mark.django_db
def test_it_opens_sqlite_in_wal_mode_with_immediate_transactions():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
