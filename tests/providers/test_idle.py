"""A listener hears of new mail the moment Dovecot has it, over IMAP IDLE, for many channels.

The engine runs in a thread as the listener process would run it; what it reports goes to a
queue, and the tests wait on that queue. Everything goes over the wire to a real Dovecot.
"""

from __future__ import annotations

import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator

import pytest

from providers.config import Credentials, IncomingSettings, ServerAddress
from providers.idle import (
    CONNECTED,
    ERROR,
    GAVE_UP,
    GIVE_UP_AFTER,
    NEW_MAIL,
    UNSUPPORTED,
    IdleEngine,
    IdleEvent,
)
from tests.providers.conftest import POLICY, TIMEOUT, raw_message
from tests.servers.dovecot import Dovecot, MailUser

# Quick enough that a test sees several retries in a second.
FAST = {"backoff_base": 0.05, "backoff_max": 0.3, "connect_timeout": TIMEOUT}
# Dovecot hears of a delivery through inotify, then tells the idling client; past the kernel's
# inotify limit for the mail uid (128 sessions, shared with every Dovecot on the machine) it
# looks every second instead (tests/servers/dovecot.py). Generous for a loaded machine: these
# tests are about whether the notice comes; bench/idle.py measures how fast.
NOTICE = 5.0
# Dovecot's capabilities without IDLE, for a server that does not offer it.
NO_IDLE = "imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS\n"


class Listener:
    """An IdleEngine running in its own thread, as the listener process runs it."""

    def __init__(self, **options: float) -> None:
        self.events: queue.Queue[IdleEvent] = queue.Queue()
        self.seen: list[IdleEvent] = []
        self.engine = IdleEngine(self.events.put, **{**FAST, **options})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.engine.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def watch(self, key: Hashable, settings: IncomingSettings) -> None:
        self.engine.watch(key, settings, POLICY)

    def wait_for(self, key: Hashable, kind: str, within: float = 2.0) -> IdleEvent:
        """The next event of this kind for this key; what comes before it is kept in `seen`."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(event)
            if event.key == key and event.kind == kind:
                return event
        raise AssertionError(f"no {kind} for {key!r} within {within} s; saw {self.seen}")

    def wait_for_all(self, keys: set[Hashable], kind: str, within: float = 2.0) -> None:
        """An event of this kind from each of these keys, in whatever order they come."""
        waiting = set(keys)
        deadline = time.monotonic() + within
        while waiting and (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(event)
            if event.kind == kind:
                waiting.discard(event.key)
        assert not waiting, f"no {kind} within {within} s for {sorted(waiting)[:5]}..."

    def during(self, seconds: float) -> list[IdleEvent]:
        """Every event in the next `seconds`."""
        deadline = time.monotonic() + seconds
        events = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                events.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        self.seen.extend(events)
        return events

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the engine did not stop"


@pytest.fixture
def listener() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(**options: float) -> Listener:
        started.append(Listener(**options))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def imap(
    dovecot: Dovecot,
    user: MailUser,
    security: str = "ssl",
    *,
    port: int | None = None,
    password: str | None = None,
) -> IncomingSettings:
    default_port = dovecot.ports.imaps if security == "ssl" else dovecot.ports.imap
    server = ServerAddress(
        "127.0.0.1", port or default_port, security, trust_self_signed=True, timeout=TIMEOUT
    )
    credentials = Credentials(user.name, user.password if password is None else password)
    return IncomingSettings("imap", server, credentials)


def logged_out_bytes(dovecot: Dovecot, user: MailUser, within: float = 3.0) -> int:
    """What the client sent in its session, from Dovecot's "Logged out in=..." line."""
    pattern = re.compile(rf"imap\({user.name}\).*Disconnected: Logged out in=(\d+)")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = pattern.findall(dovecot.log_path.read_text(errors="replace"))
        if found:
            return int(found[-1])
        time.sleep(0.05)
    raise AssertionError(f"{user.name} never logged out; log tail:\n{dovecot.log_tail()}")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- new mail ------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_it_hears_of_a_delivery_at_once(dovecot, mail_user, listener, security):
    running = listener()
    running.watch("support", imap(dovecot, mail_user, security))
    running.wait_for("support", CONNECTED)

    dovecot.deliver(mail_user, raw_message(1))

    running.wait_for("support", NEW_MAIL, within=NOTICE)


def test_each_channel_hears_only_of_its_own_mail(dovecot, listener):
    alice, bob = dovecot.add_user(), dovecot.add_user()
    running = listener()
    running.watch("alice", imap(dovecot, alice))
    running.watch("bob", imap(dovecot, bob))
    running.wait_for("alice", CONNECTED)
    running.wait_for("bob", CONNECTED)

    dovecot.deliver(bob, raw_message(1))
    running.wait_for("bob", NEW_MAIL, within=NOTICE)
    dovecot.deliver(alice, raw_message(2))
    running.wait_for("alice", NEW_MAIL, within=NOTICE)

    later = running.during(0.5)
    assert [(e.key, e.kind) for e in running.seen if e.kind == NEW_MAIL] == [
        ("bob", NEW_MAIL),
        ("alice", NEW_MAIL),
    ], later


def test_a_burst_of_deliveries_is_one_or_two_notices_not_none(dovecot, mail_user, listener):
    running = listener()
    running.watch("support", imap(dovecot, mail_user))
    running.wait_for("support", CONNECTED)

    for number in range(20):
        dovecot.deliver(mail_user, raw_message(number))

    running.wait_for("support", NEW_MAIL, within=NOTICE)
    notices = [e for e in running.during(0.6) if e.kind == NEW_MAIL]
    assert len(notices) <= 3  # coalesced: at most one per 0.2 s


def test_mail_that_came_while_disconnected_is_announced_on_reconnect(
    dovecot, mail_user, listener, tcp_proxy
):
    proxy = tcp_proxy(dovecot.ports.imap)
    running = listener(backoff_base=0.5)
    running.watch("support", imap(dovecot, mail_user, "none", port=proxy.port))
    running.wait_for("support", CONNECTED)

    proxy.cut_all()
    running.wait_for("support", ERROR)
    dovecot.deliver(mail_user, raw_message(1))  # nobody is listening now

    running.wait_for("support", NEW_MAIL, within=2.0)


# --- staying connected ---------------------------------------------------------------------


def test_it_reissues_idle_on_the_same_connection(dovecot, listener, tcp_proxy):
    often, seldom = dovecot.add_user(), dovecot.add_user()
    proxy = tcp_proxy(dovecot.ports.imap)
    reissuing, steady = listener(reissue_after=0.5), listener()
    reissuing.watch("often", imap(dovecot, often, "none", port=proxy.port))
    steady.watch("seldom", imap(dovecot, seldom, "none"))
    reissuing.wait_for("often", CONNECTED)
    steady.wait_for("seldom", CONNECTED)

    time.sleep(2.2)  # four re-issues
    dovecot.deliver(often, raw_message(1))
    reissuing.wait_for("often", NEW_MAIL, within=NOTICE)

    assert proxy.connections == 1
    assert [e.kind for e in reissuing.seen] == [CONNECTED, NEW_MAIL]
    reissuing.stop()
    steady.stop()
    # Same commands but for the re-issues: each is "DONE" and a new "Pn IDLE".
    extra = logged_out_bytes(dovecot, often) - logged_out_bytes(dovecot, seldom)
    assert extra >= 3 * len(b"DONE\r\nP2 IDLE\r\n")


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "fin"])
def test_it_reconnects_when_the_connection_is_cut(dovecot, mail_user, listener, tcp_proxy, reset):
    proxy = tcp_proxy(dovecot.ports.imaps)
    running = listener()
    running.watch("support", imap(dovecot, mail_user, port=proxy.port))
    running.wait_for("support", CONNECTED)

    proxy.cut_all(reset=reset)

    error = running.wait_for("support", ERROR)
    assert f"127.0.0.1 port {proxy.port}" in error.detail
    assert not error.permanent
    running.wait_for("support", CONNECTED)
    assert proxy.connections == 2
    dovecot.deliver(mail_user, raw_message(1))
    running.wait_for("support", NEW_MAIL, within=NOTICE)


def test_it_reconnects_after_the_server_restarts(dovecot, mail_user, listener):
    running = listener()
    # Plain IMAP: over TLS, Dovecot's login process (which relays TLS) ends before the BYE.
    running.watch("support", imap(dovecot, mail_user, "none"))
    running.wait_for("support", CONNECTED)

    dovecot.restart()

    error = running.wait_for("support", ERROR)
    assert "server said: Server shutting down" in error.detail
    running.wait_for("support", CONNECTED, within=5.0)
    dovecot.deliver(mail_user, raw_message(1))
    running.wait_for("support", NEW_MAIL, within=NOTICE)


# --- failing -------------------------------------------------------------------------------


def test_a_refused_password_is_reported_and_left_to_polling(dovecot, mail_user, listener):
    running = listener()
    running.watch("support", imap(dovecot, mail_user, password="wrong"))

    error = running.wait_for("support", ERROR)
    assert "refused the username or password" in error.detail
    assert "wrong" not in error.detail
    assert error.permanent
    # No point hammering a server with a password it refused (lockouts): give up at once...
    assert running.wait_for("support", GAVE_UP).detail == error.detail
    # ...but keep trying, slowly, in case the password was changed on the server.
    running.wait_for("support", ERROR, within=1.0)

    running.engine.unwatch("support")
    time.sleep(0.1)
    assert running.during(0.8) == []


def test_an_unreachable_server_is_given_up_after_five_failures(
    dovecot, mail_user, listener, closed_port
):
    running = listener()
    running.watch("support", imap(dovecot, mail_user, "none", port=closed_port))

    running.wait_for("support", GAVE_UP, within=3.0)

    errors = [e for e in running.seen if e.kind == ERROR]
    assert len(errors) == GIVE_UP_AFTER
    assert f"Nothing answers on 127.0.0.1 port {closed_port}" in errors[0].detail
    assert not errors[0].permanent
    running.wait_for("support", ERROR, within=1.0)  # still trying, at backoff_max
    assert GAVE_UP not in [e.kind for e in running.during(0.5)]  # said once


def test_new_settings_replace_the_old_connection(dovecot, mail_user, listener):
    running = listener()
    running.watch("support", imap(dovecot, mail_user, password="wrong"))
    running.wait_for("support", GAVE_UP)

    running.watch("support", imap(dovecot, mail_user))

    running.wait_for("support", CONNECTED)
    dovecot.deliver(mail_user, raw_message(1))
    running.wait_for("support", NEW_MAIL, within=NOTICE)


@pytest.fixture(scope="module")
def dovecot_without_idle(tmp_path_factory):
    server = Dovecot(tmp_path_factory.mktemp("dovecot-no-idle"), extra_config=NO_IDLE)
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_a_server_without_idle_is_left_to_polling(dovecot_without_idle, listener):
    user = dovecot_without_idle.add_user()
    running = listener()
    running.watch("support", imap(dovecot_without_idle, user))

    event = running.wait_for("support", UNSUPPORTED)

    assert "does not offer IMAP IDLE" in event.detail
    assert running.during(0.5) == []  # no retries: it is not an error
    logged_out_bytes(dovecot_without_idle, user)  # and it said goodbye properly


# --- the caller's side ---------------------------------------------------------------------


def test_a_channel_watched_while_running_is_listened_to_within_a_second(
    dovecot, mail_user, listener
):
    running = listener()
    time.sleep(0.3)  # the loop is waiting in select

    started = time.monotonic()
    running.watch("support", imap(dovecot, mail_user))
    running.wait_for("support", CONNECTED, within=1.0)

    assert time.monotonic() - started < 1.0
    assert running.engine.watched() == {"support"}


def test_watching_the_same_settings_again_keeps_the_connection(
    dovecot, mail_user, listener, tcp_proxy
):
    proxy = tcp_proxy(dovecot.ports.imap)
    settings = imap(dovecot, mail_user, "none", port=proxy.port)
    running = listener()
    running.watch("support", settings)
    running.wait_for("support", CONNECTED)

    running.watch("support", settings)

    assert running.during(0.5) == []
    assert proxy.connections == 1


def test_unwatching_logs_out_and_closes_the_connection(dovecot, mail_user, listener, tcp_proxy):
    proxy = tcp_proxy(dovecot.ports.imap)
    running = listener()
    running.watch("support", imap(dovecot, mail_user, "none", port=proxy.port))
    running.wait_for("support", CONNECTED)

    running.engine.unwatch("support")

    logged_out_bytes(dovecot, mail_user, within=1.0)
    deadline = time.monotonic() + 1.0
    while proxy.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.open_connections == 0
    assert running.engine.watched() == set()
    dovecot.deliver(mail_user, raw_message(1))
    assert running.during(0.5) == []


def test_stopping_logs_out_of_every_server(dovecot, listener, tcp_proxy):
    proxy = tcp_proxy(dovecot.ports.imaps)
    users = [dovecot.add_user() for _ in range(3)]
    running = listener()
    for user in users:
        running.watch(user.name, imap(dovecot, user, port=proxy.port))
    running.wait_for_all({user.name for user in users}, CONNECTED)

    running.stop()

    for user in users:
        logged_out_bytes(dovecot, user, within=1.0)
    assert proxy.open_connections == 0


# --- many channels -------------------------------------------------------------------------


def test_two_hundred_channels_share_one_thread(dovecot, listener):
    users = [dovecot.add_user() for _ in range(200)]
    threads_before = threading.active_count()
    memory_before = resident_bytes()
    running = listener(connect_timeout=5.0)
    started = time.monotonic()
    for user in users:
        running.watch(user.name, imap(dovecot, user))
    running.wait_for_all({user.name for user in users}, CONNECTED, within=20.0)
    connected_in = time.monotonic() - started
    growth = resident_bytes() - memory_before

    chosen = random.sample(users, 10)
    for user in chosen:
        dovecot.deliver(user, raw_message(1))
    running.wait_for_all({user.name for user in chosen}, NEW_MAIL, within=NOTICE)
    running.during(0.5)

    noticed = {e.key for e in running.seen if e.kind == NEW_MAIL}
    assert noticed == {user.name for user in chosen}
    # The loop thread and the connect pool (at most 8), not a thread per channel.
    assert threading.active_count() - threads_before <= 1 + 8
    print(
        f"\n200 IDLE channels over TLS: connected in {connected_in:.2f} s, "
        f"RSS +{growth / 2**20:.1f} MiB, {growth / 200 / 1024:.1f} KiB per channel"
    )
