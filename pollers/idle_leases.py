"""Which listener process listens on which channel: leases on the mailbox rows, fair shares.

A listener holds a channel while `idle_lease_owner` is its id and `idle_lease_expires_at` lies
ahead; it takes a free or expired channel by conditional UPDATE (two listeners never both win
one), renews all of its leases in one UPDATE, and gives back what exceeds its fair share, so
a second listener on this machine or another gets half of the channels, and all of those of a
listener that died once its leases run out.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from mailboxes.models import Mailbox
from pollers.models import IdleListener

# A listener's row outlives its process this long before a live one deletes it.
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Candidate:
    """A channel a listener may listen on, as the cheap periodic query sees it."""

    pk: int
    updated_at: datetime  # changes on every save from the admin: then reload its settings
    owner: str
    expires_at: datetime | None

    def free(self, now: datetime) -> bool:
        return not self.owner or self.expires_at is None or self.expires_at < now


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.POSTROOM_IDLE_LEASE_SECONDS)


def idle_candidates() -> dict[int, Candidate]:
    """Online, receiving IMAP channels; OAuth2 ones once signed in and until a refusal."""
    rows = (
        Mailbox.objects.filter(
            enabled=True, listen=True, protocol=Mailbox.Protocol.IMAP, oauth_refused_at=None
        )
        .exclude(incoming_host="")
        .exclude(auth_type=Mailbox.AuthType.OAUTH2, oauth_signed_in_at=None)
        .values_list("pk", "updated_at", "idle_lease_owner", "idle_lease_expires_at")
    )
    return {row[0]: Candidate(*row) for row in rows}


def idle_share(*, channels: int, now: datetime) -> int:
    """How many channels each live listener should hold: all of them, divided fairly."""
    alive = IdleListener.objects.filter(seen_at__gte=now - lease_duration()).count()
    return math.ceil(channels / max(alive, 1))


def idle_leases_claim(*, owner: str, mailbox_ids: list[int], now: datetime) -> set[int]:
    """Take those of these channels that are still free; returns the ones now held."""
    free = Q(idle_lease_owner="") | Q(idle_lease_expires_at__isnull=True)
    free |= Q(idle_lease_expires_at__lt=now) | Q(idle_lease_owner=owner)
    expires = now + lease_duration()
    with transaction.atomic():
        # Lock the free rows in one order, passing over those another listener is taking: two
        # listeners updating overlapping sets row by row in different orders deadlock on
        # PostgreSQL. (SQLite takes the whole database for the transaction instead.)
        taking = Mailbox.objects.select_for_update(skip_locked=True).filter(
            free, pk__in=mailbox_ids
        )
        ids = list(taking.order_by("pk").values_list("pk", flat=True))
        Mailbox.objects.filter(free, pk__in=ids).update(
            idle_lease_owner=owner, idle_lease_expires_at=expires
        )
    won = Mailbox.objects.filter(pk__in=mailbox_ids, idle_lease_owner=owner)
    return set(won.values_list("pk", flat=True))


def idle_leases_renew(*, owner: str, now: datetime) -> None:
    Mailbox.objects.filter(idle_lease_owner=owner).update(
        idle_lease_expires_at=now + lease_duration()
    )


def idle_leases_release(*, owner: str, mailbox_ids: list[int] | None = None) -> None:
    """Give leases back (all of them without ids) so another listener may take them at once."""
    held = Mailbox.objects.filter(idle_lease_owner=owner)
    if mailbox_ids is not None:
        held = held.filter(pk__in=mailbox_ids)
    held.update(idle_lease_owner="", idle_lease_expires_at=None)


def idle_listener_heartbeat(*, owner: str, now: datetime) -> None:
    """Say this listener is alive (creating its row on the first beat)."""
    seen = IdleListener.objects.filter(owner=owner).update(seen_at=now)
    if not seen:
        IdleListener.objects.create(
            owner=owner, host=socket.gethostname(), pid=os.getpid(), started_at=now, seen_at=now
        )
        IdleListener.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


def idle_listener_leave(*, owner: str) -> None:
    IdleListener.objects.filter(owner=owner).delete()
