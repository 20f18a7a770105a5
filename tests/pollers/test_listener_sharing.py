"""Several listener processes share the channels under leases, and outlive each other.

Every channel goes through a proxy of its own, so the tests can count the IMAP connections
each channel has: one listener holding it means one connection. Polls go to a broker nobody
reads (eager=False), so every connection counted is an IDLE one.
"""

from __future__ import annotations

import pytest

from mailboxes.models import Mailbox
from tests.launch import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

HOUR = 3600


@pytest.fixture
def twenty_channels(make_channel, dovecot, tcp_proxy):
    """20 channels, each on its own user and its own proxy: {channel id: proxy}."""
    proxies = {}
    for _ in range(20):
        proxy = tcp_proxy(dovecot.ports.imap)
        channel = make_channel(
            dovecot.add_user(),
            incoming_port=proxy.port,
            incoming_security="none",
            refresh_interval=HOUR,
        )
        proxies[channel.pk] = proxy
    return proxies


def connections(proxies) -> dict[int, int]:
    return {pk: proxy.open_connections for pk, proxy in proxies.items()}


def test_two_listeners_share_twenty_channels_and_one_takes_over_when_the_other_dies(
    twenty_channels, listen
):
    proxies = twenty_channels
    first = listen(eager=False)
    wait_until(lambda: len(first.held()) == 20, timeout=60, what="the first to hold all 20")
    second = listen(eager=False)

    def shared():
        # Checked at every look, not only at the end: never two connections to one channel.
        assert max(connections(proxies).values()) <= 1, connections(proxies)
        # A lease is taken before its connection opens: wait for both.
        held = len(first.held()) == 10 and len(second.held()) == 10
        return held and connections(proxies) == dict.fromkeys(proxies, 1)

    wait_until(shared, timeout=60, what="the two listeners to hold 10 channels each")
    assert first.held().isdisjoint(second.held())
    assert connections(proxies) == dict.fromkeys(proxies, 1)

    orphaned = first.held()
    first.kill()  # SIGKILL: no goodbye, its leases (3 s) just run out

    def taken_over():
        assert max(connections(proxies).values()) <= 1, connections(proxies)
        return second.held() == set(proxies) and connections(proxies) == dict.fromkeys(proxies, 1)

    wait_until(taken_over, timeout=60, what="the second to take over the first's channels")
    assert connections(proxies) == dict.fromkeys(proxies, 1)
    taken = Mailbox.objects.filter(pk__in=orphaned)
    assert set(taken.values_list("idle_lease_owner", flat=True)) == {second.owner}


def test_a_stopped_listener_logs_out_and_hands_its_channels_back(twenty_channels, listen):
    proxies = twenty_channels
    listener = listen(eager=False)
    wait_until(lambda: len(listener.held()) == 20, timeout=60, what="all 20 on push")

    assert listener.stop() == 0

    wait_until(lambda: set(connections(proxies).values()) == {0}, timeout=10, what="every logout")
    channels = Mailbox.objects.all()
    assert {(c.push_state, c.push_reason, c.idle_lease_owner) for c in channels} == {
        ("polling", "stopped", "")
    }
    assert "Listener stopped." in listener.output()
