"""Every listening channel is polled on its own interval, by exactly one worker at a time."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mailboxes.models import InboundMessage, Mailbox
from pollers.leases import LeaseLost, lease_acquire, lease_release, lease_renew
from pollers.schedule import backoff, polls_claim_due
from tests.pollers.conftest import message

pytestmark = pytest.mark.backends


@pytest.mark.django_db
def test_the_dispatcher_claims_due_listening_channels_once(make_channel, dovecot):
    due = make_channel()
    later = make_channel(dovecot.add_user(), next_poll_at=timezone.now() + timedelta(minutes=5))
    offline = make_channel(dovecot.add_user(), enabled=False)
    outbound = make_channel(dovecot.add_user(), listen=False)

    assert polls_claim_due() == [due.pk]
    assert polls_claim_due() == []  # claimed: its next poll moved one interval ahead
    due.refresh_from_db()
    assert due.next_poll_at > timezone.now() + timedelta(seconds=due.refresh_interval - 5)
    assert {later.pk, offline.pk, outbound.pk}.isdisjoint(polls_claim_due())


@pytest.mark.django_db
def test_a_busy_lease_leaves_a_poll_again_mark_that_the_holder_sees(make_channel):
    mailbox = make_channel()
    assert lease_acquire(mailbox_id=mailbox.pk, owner="worker-a")
    assert not lease_acquire(mailbox_id=mailbox.pk, owner="worker-b")
    assert lease_release(mailbox_id=mailbox.pk, owner="worker-a") is True  # poll again
    assert lease_acquire(mailbox_id=mailbox.pk, owner="worker-b")
    assert lease_release(mailbox_id=mailbox.pk, owner="worker-b") is False


@pytest.mark.django_db
def test_a_crashed_workers_lease_expires_and_the_new_holder_wins(make_channel, settings):
    mailbox = make_channel()
    assert lease_acquire(mailbox_id=mailbox.pk, owner="crashed")
    Mailbox.objects.filter(pk=mailbox.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert lease_acquire(mailbox_id=mailbox.pk, owner="new")
    with pytest.raises(LeaseLost):
        lease_renew(mailbox_id=mailbox.pk, owner="crashed")  # it must stop, not carry on


def test_backoff_doubles_with_jitter_and_stops_at_an_hour():
    assert timedelta(seconds=48) <= backoff(refresh=60, failures=1) <= timedelta(seconds=72)
    assert timedelta(seconds=192) <= backoff(refresh=60, failures=3) <= timedelta(seconds=288)
    assert backoff(refresh=60, failures=40) <= timedelta(hours=1)


@pytest.mark.django_db(transaction=True)
def test_two_workers_polling_one_channel_at_once_store_each_message_once(
    dovecot, mail_user, connected, poll
):
    mailbox = connected()
    for n in range(30):
        dovecot.deliver(mail_user, message(n))
    results, barrier = [], threading.Barrier(4)

    def worker():
        barrier.wait()
        try:
            results.append(poll(Mailbox.objects.get(pk=mailbox.pk)))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    leftovers = [r for r in results if r.again]
    for _ in leftovers:
        poll(mailbox)  # what the task does when a wake-up arrived mid-poll

    assert InboundMessage.objects.filter(mailbox=mailbox).count() == 30
    assert sum(r.stored for r in results) <= 30
