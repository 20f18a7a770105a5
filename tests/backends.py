"""Run the tests (or any command) on PostgreSQL and Redis instead of SQLite and the folder broker.

    python -m tests.backends [PYTEST ARGS]       pytest -m backends, what `make test` runs second
    python -m tests.backends -- COMMAND [ARGS]   any command, say a benchmark

Django reads its settings once per process, so the servers are started here, before pytest:
a throwaway PostgreSQL cluster and a Redis without persistence (tests/servers/), on free
loopback ports, handed to the command as DATABASE_URL and CELERY_BROKER_URL and removed after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.servers import postgres, redis


def database_url() -> str:
    """The test database as a DATABASE_URL, for the workers and listeners a test starts."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        command = argv[1:]
    else:
        command = [sys.executable, "-m", "pytest", "-m", "backends", *argv]
    database = postgres.start()
    try:
        broker = redis.start()
        try:
            env = {
                **os.environ,
                "DATABASE_URL": database.create_database("postroom"),
                "CELERY_BROKER_URL": broker.url(),
            }
            print(f"PostgreSQL on port {database.port}, Redis on port {broker.port}", flush=True)
            child = subprocess.Popen(command, env=env)
            # SIGTERM (CI cancelling) goes to the command; the servers go once it has ended.
            signal.signal(signal.SIGTERM, lambda *_: child.terminate())
            return child.wait()
        finally:
            broker.stop()
    finally:
        database.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
