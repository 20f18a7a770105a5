"""Postroom's entrypoints: `python -m channels_app.launcher [ROLE]`.

With no role (`make run`) it migrates, makes sure an admin exists, and runs web + worker + beat +
the IMAP IDLE listener together under one supervisor: Ctrl-C (or SIGTERM) stops all of them, and
if one dies the others are stopped too, so a half-running Postroom never hides behind a live web
server. With a role (web, worker, beat, listen: what docker-compose.yml runs) it runs that one
process alone; `web` migrates first. Both paths build the command lines in `role_argv`, so they
cannot drift.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_SECONDS = 10
MANAGE_PY = Path(__file__).resolve().parent.parent / "manage.py"


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None


ROLES = ("web", "worker", "beat", "listen")


def main(argv: list[str]) -> int:
    role = argv[0] if argv else "all"
    if role not in (*ROLES, "all"):
        print(f"usage: python -m channels_app.launcher [{'|'.join(ROLES)}]", file=sys.stderr)
        return 2
    if role in ("all", "web"):
        login, password = setup()
    if role != "all":
        os.execv(sys.executable, role_argv(role))  # noqa: S606 - become the role, no shell
    children = [Child(name, role_argv(name)) for name in ROLES]
    for child in children:
        child.process = subprocess.Popen(child.argv)
    _wait_for_web(children[0])
    _announce(login, password)
    return _supervise(children)


def setup() -> tuple[str, str | None]:
    """Migrate and make sure an admin exists; return the admin's login and new password."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "channels_app.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    return admin_ensure()


def role_argv(role: str) -> list[str]:
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "channels_app"]
    concurrency = os.environ.get("POSTROOM_WORKER_CONCURRENCY", "2")
    return {
        "web": [python, str(MANAGE_PY), "runserver", "--noreload", f"{_host()}:{_port()}"],
        "worker": [*celery, "worker", "--loglevel=INFO", f"--concurrency={concurrency}"],
        "beat": [*celery, "beat", "--loglevel=INFO", "--pidfile="],
        "listen": [python, str(MANAGE_PY), "listen"],
    }[role]


def _host() -> str:
    return os.environ.get("POSTROOM_HOST", "127.0.0.1")


def _port() -> str:
    return os.environ.get("POSTROOM_PORT", "8000")


def _wait_for_web(web: Child, timeout: float = 60) -> None:
    """Announce the URL only once it answers, so the first click never meets a refusal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.process.poll() is None:
        try:
            socket.create_connection((_host(), int(_port())), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)


def _announce(login: str, password: str | None) -> None:
    from django.conf import settings

    print(f"\nPostroom is running at http://{_host()}:{_port()}/admin/", flush=True)
    print(f"Agents work at http://{_host()}:{_port()}/cases/ (same login)", flush=True)
    if password:
        print(f"Admin login: {login} / {password}  (shown once; keep it)", flush=True)
    else:
        print(
            f"Admin login: {login} (password set earlier; reset it with "
            f"`.venv/bin/python manage.py changepassword {login}`)",
            flush=True,
        )
    print(
        f"Data in {settings.VAR_DIR}. Press Ctrl-C to stop web, worker, beat and listener.\n",
        flush=True,
    )


def admin_ensure() -> tuple[str, str | None]:
    """Create the first superuser; return its login and, only when new, its password."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    User = get_user_model()
    existing = User.objects.filter(is_superuser=True).order_by("pk").first()
    if existing:
        return existing.get_username(), None
    login = settings.POSTROOM_ADMIN_USER
    password = settings.POSTROOM_ADMIN_PASSWORD or secrets.token_urlsafe(12)
    User.objects.create_superuser(login, settings.POSTROOM_ADMIN_EMAIL, password)
    return login, password


def _supervise(children: list[Child]) -> int:
    stopping = False

    def request_stop(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        for child in children:
            code = child.process.poll()
            if code is not None:
                print(
                    f"Postroom: {child.name} exited with {code}; stopping the others.",
                    file=sys.stderr,
                    flush=True,
                )
                exit_code, stopping = code or 1, True
                break
        time.sleep(0.2)
    _stop_all(children)
    return exit_code


def _stop_all(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
    print("Postroom: stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
