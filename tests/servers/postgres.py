"""A throwaway PostgreSQL cluster on loopback, from Debian's `postgresql` package.

initdb into a fresh temp dir, `postgres` on a free 127.0.0.1 port, removed on stop. Nothing
under /etc/postgresql or /var/lib/postgresql is read or written. PostgreSQL refuses to run as
root, so a root test run starts it as the `postgres` account the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers.dovecot import _die_with_parent
from tests.servers.net import free_port

USER = "postroom"  # the superuser initdb creates; trust auth, loopback only
START_TIMEOUT = 30.0
# A test cluster loses nothing worth keeping in a crash: skip the fsyncs.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


class PostgresError(RuntimeError):
    """PostgreSQL did not start; the message carries the tail of its log."""


class Postgres:
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.bin_dir = _bin_dir()
        self.account = _account()
        self.root = Path(tempfile.mkdtemp(prefix="postroom-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{USER}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        if self.account:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", USER, "-A", "trust", "--no-sync")
        options = [arg for option in FAST for arg in ("-c", option)]
        argv = [
            str(self.bin_dir / "postgres"),
            *("-D", str(self.data_dir), "-p", str(self.port), "-h", self.host),
            *("-k", str(self.root)),  # its unix socket stays in our dir, not /run/postgresql
            *options,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # a killed test run takes it down too
                **self._as_account(),
            )
        self._wait_until_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown, clients disconnected
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", USER, name)
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log file)"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        ready = [str(self.bin_dir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        while subprocess.run(ready, check=False).returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise PostgresError(f"PostgreSQL did not start; its log:\n{tail}")
            time.sleep(0.1)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            **self._as_account(),
        )
        if done.returncode:
            raise PostgresError(f"{program} failed: {done.stderr or done.stdout}")

    def _as_account(self) -> dict:
        if not self.account:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "cwd": self.root}


def start() -> Postgres:
    server = Postgres()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def _bin_dir() -> Path:
    """Debian keeps initdb and postgres out of PATH, one folder per major version."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_major, reverse=True)
    if not versions:
        raise PostgresError("PostgreSQL is not installed (apt-get install postgresql)")
    return versions[0].parent


def _major(initdb: Path) -> int:
    version = initdb.parent.parent.name
    return int(version) if version.isdigit() else 0


def _account() -> pwd.struct_passwd | None:
    """Who the server runs as: us, or, when we are root, Debian's `postgres` account."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError(
            "running as root, and PostgreSQL refuses root: the `postgres` account Debian's "
            "postgresql package creates is missing (apt-get install postgresql)"
        ) from None
