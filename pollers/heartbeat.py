"""Heartbeats: scheduled work says it ran, and /healthz asks how long ago.

The beat heartbeat is stamped by a task that beat sends every 30 s and a worker runs, so its
age covers all three: beat, the broker and at least one worker. The IMAP IDLE listeners have
heartbeats of their own (IdleListener.seen_at).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from pollers.idle_leases import lease_duration
from pollers.models import Heartbeat, IdleListener

BEAT = "beat"


def heartbeat_stamp(*, name: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    if not Heartbeat.objects.filter(name=name).update(seen_at=now):
        Heartbeat.objects.update_or_create(name=name, defaults={"seen_at": now})


def heartbeat_age(*, name: str, now: datetime | None = None) -> timedelta | None:
    """How long ago `name` last beat; None if it never has."""
    seen = Heartbeat.objects.filter(name=name).values_list("seen_at", flat=True).first()
    return None if seen is None else (now or timezone.now()) - seen


@dataclass(frozen=True)
class ListenerBeats:
    alive: int  # listeners seen within their lease
    stale: int  # rows of listeners that stopped beating without saying goodbye (crashed)
    newest_age: timedelta | None


def listener_beats(*, now: datetime | None = None) -> ListenerBeats:
    now = now or timezone.now()
    seen = list(IdleListener.objects.values_list("seen_at", flat=True))
    alive = sum(1 for at in seen if at >= now - lease_duration())
    newest = max(seen, default=None)
    return ListenerBeats(
        alive=alive, stale=len(seen) - alive, newest_age=None if newest is None else now - newest
    )
