"""/healthz for load balancers and orchestrators: database, broker, beat, IMAP IDLE listeners.

The body names each check with its status and ages, never an error text: those can carry host
names, users or paths, so they go to the log. 200 when every check passes, else 503.
`?checks=database,broker` runs only those (a web container's own health, without waiting for
beat to start).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pollers.heartbeat import BEAT, heartbeat_age, listener_beats

logger = logging.getLogger(__name__)
OK, FAIL, ABSENT = "ok", "fail", "absent"
BROKER_TIMEOUT = 3.0


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure is "unreachable"
        logger.warning("healthz: database check failed: %s", type(exc).__name__)
        return {"status": FAIL, "detail": "database unreachable"}
    return {"status": OK}


def check_broker() -> dict:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT)
            folder = (conn.transport_options or {}).get("data_folder_out")
            # The laptop broker is a folder: "connected" says nothing, writable does.
            if folder and not os.access(folder, os.W_OK):
                raise OSError("broker folder not writable")
    except Exception as exc:  # noqa: BLE001 - any failure is "unreachable"
        logger.warning("healthz: broker check failed: %s: %s", type(exc).__name__, exc)
        return {"status": FAIL, "detail": "broker unreachable"}
    return {"status": OK}


def check_beat() -> dict:
    age = heartbeat_age(name=BEAT)
    if age is None:
        return {"status": FAIL, "detail": "no beat heartbeat yet: is celery beat running?"}
    seconds = round(age.total_seconds())
    limit = settings.POSTROOM_HEALTH_BEAT_MAX_AGE
    status = OK if seconds <= limit else FAIL
    result = {"status": status, "age_seconds": seconds, "max_age_seconds": limit}
    if status == FAIL:
        result["detail"] = "scheduled tasks stopped running: check beat, the broker and workers"
    return result


def check_listener() -> dict:
    beats = listener_beats()
    age = None if beats.newest_age is None else round(beats.newest_age.total_seconds())
    result = {"alive": beats.alive, "stale": beats.stale, "age_seconds": age}
    if beats.alive:
        return {"status": OK, **result}
    if beats.stale or settings.POSTROOM_HEALTH_REQUIRE_LISTENER:
        detail = "no IMAP IDLE listener is running (manage.py listen)"
        return {"status": FAIL, "detail": detail, **result}
    return {"status": ABSENT, **result}  # none configured: channels are polled


CHECKS: dict[str, Callable[[], dict]] = {
    "database": check_database,
    "broker": check_broker,
    "beat": check_beat,
    "listener": check_listener,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    wanted = [n for n in request.GET.get("checks", "").split(",") if n in CHECKS] or list(CHECKS)
    results = {name: _run(name) for name in wanted}
    healthy = all(r["status"] != FAIL for r in results.values())
    body = {"status": OK if healthy else FAIL, "checks": results}
    return JsonResponse(body, status=200 if healthy else 503)


def _run(name: str) -> dict:
    try:
        return CHECKS[name]()
    except Exception as exc:  # noqa: BLE001 - heartbeats live in the database, which may be down
        logger.warning("healthz: %s check failed: %s", name, type(exc).__name__)
        return {"status": FAIL, "detail": f"{name} could not be checked"}
