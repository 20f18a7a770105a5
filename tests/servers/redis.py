"""A throwaway Redis on loopback, from Debian's `redis-server` package: no persistence, no
config file, a free 127.0.0.1 port, nothing under /etc/redis or /var/lib/redis touched."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.servers.dovecot import _die_with_parent
from tests.servers.net import free_port, wait_for_port


class RedisError(RuntimeError):
    """redis-server did not start; the message carries its output."""


class Redis:
    host = "127.0.0.1"

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
        if binary is None:
            raise RedisError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="postroom-redis-"))
        self.log_path = self.root / "redis.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self) -> None:
        argv = [
            self.binary,
            *("--bind", self.host, "--port", str(self.port), "--dir", str(self.root)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "yes"),
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            wait_for_port(self.port, self.host, timeout=10)
        except TimeoutError:
            output = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RedisError(f"redis-server did not start:\n{output}") from None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Redis:
    server = Redis()
    server.start()
    return server
