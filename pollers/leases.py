"""Row leases on channels: one poll of a channel at a time, across any number of workers.

A lease is (owner, expiry) on the mailbox row, taken and renewed by conditional UPDATE. A poll
that finds the lease held sets `poll_again`; the holder sees it on release and polls once more,
so a wake-up (fetch now, IDLE) that arrives mid-poll is never lost.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from mailboxes.models import Mailbox


class LeaseLost(Exception):
    """Another worker took the channel over (our lease expired): stop without touching it."""


def lease_owner_new() -> str:
    return uuid.uuid4().hex


def lease_acquire(*, mailbox_id: int, owner: str) -> bool:
    now = timezone.now()
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now) | Q(lease_owner=owner)
    taken = Mailbox.objects.filter(free, pk=mailbox_id).update(
        lease_owner=owner, lease_expires_at=_expiry(now), poll_again=False
    )
    if not taken:
        Mailbox.objects.filter(pk=mailbox_id).update(poll_again=True)
    return bool(taken)


def lease_renew(*, mailbox_id: int, owner: str) -> None:
    renewed = Mailbox.objects.filter(pk=mailbox_id, lease_owner=owner).update(
        lease_expires_at=_expiry(timezone.now())
    )
    if not renewed:
        raise LeaseLost(f"lease on channel {mailbox_id} was lost")


def lease_release(*, mailbox_id: int, owner: str) -> bool:
    """Give the lease back; True when a wake-up arrived meanwhile and a new poll is due."""
    with transaction.atomic():
        row = (
            Mailbox.objects.select_for_update()
            .filter(pk=mailbox_id, lease_owner=owner)
            .values_list("poll_again", flat=True)
            .first()
        )
        if row is None:
            return False
        Mailbox.objects.filter(pk=mailbox_id, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None, poll_again=False
        )
    return bool(row)


def _expiry(now):
    return now + timedelta(seconds=settings.POSTROOM_POLL_LEASE_SECONDS)
