"""/healthz, as a load balancer or `docker compose` sees it: 200 with every check passing,
503 naming the check that failed, never a secret or an error text."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from channels_app.celery import app as celery_app
from pollers.heartbeat import BEAT, heartbeat_stamp
from pollers.models import IdleListener
from pollers.tasks import beat_heartbeat
from tests.servers import redis

pytestmark = pytest.mark.django_db


def healthz(client, query: str = ""):
    response = client.get(f"/healthz{query}")
    return response.status_code, json.loads(response.content)


@pytest.fixture
def broker_url():
    """use(url): point the Celery app at another broker for the test."""
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_transport, conf.broker_transport_options

    def use(url: str) -> None:
        conf.broker_url, conf.broker_transport, conf.broker_transport_options = url, None, {}

    yield use
    conf.broker_url, conf.broker_transport, conf.broker_transport_options = saved


def test_it_is_healthy_once_beat_has_run(client):
    beat_heartbeat()  # what a worker does when beat sends it

    status, body = healthz(client)

    assert status == 200
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"] == {"status": "ok"}
    assert checks["broker"] == {"status": "ok"}
    assert checks["beat"]["status"] == "ok"
    assert checks["beat"]["age_seconds"] <= 1
    # No listener was ever started: channels are polled, which is a valid way to run.
    assert checks["listener"]["status"] == "absent"


def test_beat_runs_the_heartbeat_every_30_seconds():
    entry = PeriodicTask.objects.get(task="pollers.beat_heartbeat")
    assert entry.enabled and entry.interval.every == 30
    assert "pollers.beat_heartbeat" in celery_app.tasks


def test_it_fails_when_beat_stopped(client):
    heartbeat_stamp(name=BEAT, now=timezone.now() - timedelta(minutes=10))

    status, body = healthz(client)

    assert status == 503
    assert body["status"] == "fail"
    beat = body["checks"]["beat"]
    assert beat["status"] == "fail"
    assert beat["age_seconds"] >= 600
    assert "beat" in beat["detail"]


def test_it_fails_before_beat_ever_ran_but_a_web_check_can_leave_beat_out(client):
    assert healthz(client)[0] == 503

    status, body = healthz(client, "?checks=database,broker")

    assert status == 200
    assert set(body["checks"]) == {"database", "broker"}


def test_it_reports_listeners_and_fails_when_the_only_one_died(client):
    beat_heartbeat()
    now = timezone.now()
    IdleListener.objects.create(owner="dead", started_at=now, seen_at=now - timedelta(minutes=5))

    status, body = healthz(client)
    assert status == 503
    assert body["checks"]["listener"] | {"age_seconds": 0} == {
        "status": "fail",
        "detail": "no IMAP IDLE listener is running (manage.py listen)",
        "alive": 0,
        "stale": 1,
        "age_seconds": 0,
    }

    IdleListener.objects.create(owner="alive", started_at=now, seen_at=now)
    status, body = healthz(client)
    assert status == 200
    assert body["checks"]["listener"]["alive"] == 1


def test_it_checks_a_redis_broker_and_fails_without_saying_where_it_is(client, broker_url):
    beat_heartbeat()
    server = redis.start()
    try:
        broker_url(server.url())
        assert healthz(client)[0] == 200
    finally:
        server.stop()

    status, body = healthz(client)

    assert status == 503
    assert body["checks"]["broker"] == {"status": "fail", "detail": "broker unreachable"}
    assert body["checks"]["database"]["status"] == "ok"
    raw = json.dumps(body)
    assert str(server.port) not in raw and "redis" not in raw


def test_it_answers_without_a_slash_and_without_a_redirect(client):
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/healthz/").status_code == 404


def test_it_turns_healthy_once_beat_and_a_worker_stamp_the_heartbeat(launch):
    """The real chain, as `make run` starts it: beat sends the heartbeat task through the
    broker, a worker runs it, and /healthz sees its age."""
    run = launch()
    url = run.wait_for(r"running at (http://\S+)/admin/").group(1)
    deadline = time.monotonic() + 90  # beat sends one heartbeat as it starts
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/healthz", timeout=10)
        if response.status_code == 200:
            break
        time.sleep(1)
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["beat"]["age_seconds"] <= 35
    run.stop()
