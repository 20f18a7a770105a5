"""gunicorn's configuration for the web process: `gunicorn -c python:channels_app.gunicorn_conf`
(docker-compose.yml, Dockerfile). Command-line options still apply on top of it.

In multiprocess mode prometheus_client asks for the files of a dead worker to be marked dead
(its live gauges would otherwise be summed forever); the master sees workers exit, so it does
that here. Counters and histograms of dead workers stay: they are still part of the totals.
"""

from __future__ import annotations

import os

from prometheus_client import multiprocess

from channels_app.metrics_folder import VARIABLE, process_identifier


def child_exit(server, worker) -> None:
    folder = os.environ.get(VARIABLE)
    if folder:
        multiprocess.mark_process_dead(process_identifier(worker.pid), folder)
