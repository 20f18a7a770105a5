"""Channels on push are still polled, at the longer safety-net interval; a channel whose
listener died goes back to its refresh interval at once.

The push state is written as a listener writes it (its lease, then push_record); the
dispatcher is the one beat runs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailboxes.models import Mailbox
from pollers.idle_leases import idle_leases_claim
from pollers.push import Push, PushChange, push_record
from pollers.schedule import polls_claim_due

pytestmark = pytest.mark.django_db

LISTENER = "listener-one"


def put_on_push(mailbox: Mailbox, now) -> None:
    assert idle_leases_claim(owner=LISTENER, mailbox_ids=[mailbox.pk], now=now) == {mailbox.pk}
    push = Push(Mailbox.PushState.PUSH, since=now)
    change = PushChange(mailbox.pk, push, mailbox.refresh_interval, left_push=False)
    push_record(owner=LISTENER, changes=[change], now=now)


@pytest.fixture
def two_channels(make_channel, dovecot):
    return make_channel(dovecot.add_user()), make_channel(dovecot.add_user())


def test_a_channel_on_push_is_polled_at_the_safety_net_interval(two_channels, settings):
    settings.POSTROOM_IDLE_SAFETY_POLL_SECONDS = 900
    on_push, polling = two_channels
    now = timezone.now()
    put_on_push(on_push, now)

    assert sorted(polls_claim_due(now=now)) == sorted([on_push.pk, polling.pk])

    on_push.refresh_from_db()
    polling.refresh_from_db()
    assert on_push.next_poll_at == now + timedelta(seconds=900)
    assert polling.next_poll_at == now + timedelta(seconds=60)


def test_a_refresh_interval_longer_than_the_safety_net_is_kept(make_channel, settings):
    settings.POSTROOM_IDLE_SAFETY_POLL_SECONDS = 900
    hourly = make_channel(refresh_interval=3600)
    now = timezone.now()
    put_on_push(hourly, now)

    polls_claim_due(now=now)

    hourly.refresh_from_db()
    assert hourly.next_poll_at == now + timedelta(seconds=3600)


def test_a_channel_whose_listener_died_is_polled_again_at_once(make_channel, settings):
    settings.POSTROOM_IDLE_LEASE_SECONDS = 60
    support = make_channel()
    then = timezone.now() - timedelta(minutes=5)
    put_on_push(support, then)
    Mailbox.objects.filter(pk=support.pk).update(next_poll_at=then + timedelta(seconds=900))
    now = timezone.now()

    assert polls_claim_due(now=now) == [support.pk]  # its lease ran out 4 minutes ago

    support.refresh_from_db()
    assert support.push_state == Mailbox.PushState.POLLING
    assert support.push_reason == Mailbox.PushReason.STOPPED
    assert support.push_since == now
    assert support.next_poll_at == now + timedelta(seconds=60)
