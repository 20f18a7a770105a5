"""PROMETHEUS_MULTIPROC_DIR: the folder where prometheus_client keeps each process's counters so
that /metrics can add up gunicorn's and Celery's workers. Settings set it up, before any
counter exists.

A folder that cannot be used must not take the processes down with it (prometheus_client
would raise on every counter): such a process keeps its counters in memory, and says why on
stderr; the system check and /metrics say it too.

Containers sharing the folder number their processes each from 1, so two of them could both
write "counter_7.db": file names carry the host name (a container's ID) before the pid.
"""

from __future__ import annotations

import os
import socket
import sys

from prometheus_client import values

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# "_" separates the parts of prometheus_client's file names: keep it out of the identifier.
HOST = socket.gethostname().replace("_", "-")


def process_identifier(pid: int | None = None) -> str:
    """This process's (or `pid`'s, on this host) part of the file names."""
    return f"{HOST}-{os.getpid() if pid is None else pid}"


def folder_problem(folder: str) -> str:
    """What keeps this process from writing counters in `folder`, or "" when nothing does."""
    if not os.path.exists(folder):
        return "does not exist"
    if not os.path.isdir(folder):
        return "is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"is not writable by this process (uid {os.getuid()})"
    return ""


def problem_text(folder: str, problem: str) -> str:
    return (
        f"{VARIABLE}={folder} {problem}, so /metrics cannot add up the counters of Postroom's "
        "processes (gunicorn's and Celery's workers); mail is polled and sent as usual, and "
        f"the channel gauges are served. Set {VARIABLE} to a folder that every Postroom "
        "process on this machine can write (docker-compose.yml mounts one at "
        "/var/lib/postroom/prometheus), or unset it when one process serves everything."
    )


def multiprocess_configure(folder: str) -> str:
    """Put prometheus_client in multiprocess mode on `folder` (created when missing), or in
    single-process mode when there is none or it cannot be used; return what is wrong."""
    problem = _folder_prepare(folder) if folder else ""
    if folder and not problem:
        os.environ[VARIABLE] = folder
        values.ValueClass = values.MultiProcessValue(process_identifier)
        return ""
    # prometheus_client switches mode on the variable's mere presence, even empty.
    os.environ.pop(VARIABLE, None)
    values.ValueClass = values.MutexValue
    if problem:
        print(f"Postroom: {problem_text(folder, problem)}", file=sys.stderr, flush=True)
    return problem


def _folder_prepare(folder: str) -> str:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        if not os.path.lexists(folder):
            return f"does not exist and cannot be created ({error.strerror})"
    return folder_problem(folder)
