"""The IMAP IDLE listener process (`manage.py listen`): it says when to poll, it never fetches.

Two threads. The engine's (providers.idle) reads every idle socket in one selector loop and
puts what it hears on a queue. This one, the only one touching the database, takes those
events (new mail: enqueue `poll_mailbox`; connected, unsupported, failed: record the channel's
push state) and every few seconds syncs with the channel table: it renews its leases, takes
free channels up to its fair share, gives back the rest, and (re)watches channels that were
added or edited, or unwatches those deleted or taken offline.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from mailboxes.models import Mailbox
from mailboxes.oauth import MailboxTokenSource
from mailboxes.services import mailbox_listen_settings, network_policy
from pollers.idle_leases import (
    Candidate,
    idle_candidates,
    idle_leases_claim,
    idle_leases_release,
    idle_leases_renew,
    idle_listener_heartbeat,
    idle_listener_leave,
    idle_share,
)
from pollers.push import Push, PushChange, PushReason, PushState, push_current, push_record
from pollers.schedule import poll_request_now
from pollers.tasks import poll_mailbox
from providers.idle import CONNECTED, ERROR, GAVE_UP, NEW_MAIL, UNSUPPORTED, IdleEngine, IdleEvent

logger = logging.getLogger(__name__)

STOP_CHECK = 0.25  # the stop event is looked at this often
ENGINE_STOP_WAIT = 10.0  # the engine LOGOUTs within a second; this is for a wedged thread
# What a listener reads of a channel: mailbox_incoming_settings's fields, and its own state.
LISTEN_FIELDS = (
    "updated_at", "refresh_interval", "protocol", "incoming_host", "incoming_port",
    "incoming_security", "trust_self_signed", "username", "email_address", "folder",
    "push_state", "push_reason", "push_detail", "push_since", "auth_type",
    "oauth_shared_mailbox", "oauth_signed_in_as", "oauth_login",
)  # fmt: skip
STOPPED_DETAIL = "The listener holding it let it go (stopping, or sharing with another listener)."

# What each event makes of a channel's push state; NEW_MAIL changes nothing.
EVENT_STATES = {
    CONNECTED: (PushState.PUSH, PushReason.NONE),
    UNSUPPORTED: (PushState.POLLING, PushReason.UNSUPPORTED),
    ERROR: (PushState.POLLING, PushReason.ERROR),
    GAVE_UP: (PushState.POLLING, PushReason.GAVE_UP),
}


@dataclass
class _Held:
    """A channel this listener holds the lease of and watches."""

    updated_at: datetime
    refresh_interval: int
    push: Push
    # Mail may have come while nobody listened (before this listener took the channel over):
    # poll once IDLE runs, rather than leave it to a poll that may be minutes away.
    catch_up: bool = True


class ChannelListener:
    """Listens on its share of the channels until `stop` is set; see the module docstring."""

    def __init__(self, *, owner: str | None = None) -> None:
        self.owner = owner or uuid.uuid4().hex
        self.events: queue.Queue[IdleEvent] = queue.Queue()
        self.engine = IdleEngine(
            self.events.put,
            reissue_after=settings.POSTROOM_IDLE_RENEW_SECONDS,
            connect_timeout=settings.POSTROOM_CONNECT_TIMEOUT,
        )
        self._held: dict[int, _Held] = {}
        self._releasing: dict[int, _Held] = {}  # unwatched; handed back at the next sync
        self._renew_at = 0.0

    def run(self, stop: threading.Event) -> None:
        engine_stop = threading.Event()
        engine = threading.Thread(
            target=self.engine.run, args=(engine_stop,), name="imap-idle", daemon=True
        )
        engine.start()
        logger.info("IMAP IDLE listener %s started", self.owner)
        try:
            self._loop(stop, engine)
        finally:
            engine_stop.set()  # the engine LOGOUTs from every server as it stops
            engine.join(ENGINE_STOP_WAIT)
            self._leave()

    def _loop(self, stop: threading.Event, engine: threading.Thread) -> None:
        next_sync = 0.0
        while not stop.is_set():
            if not engine.is_alive():  # a bug in the engine: better exit than listen to nothing
                raise RuntimeError("the IMAP IDLE engine thread died; see the log above")
            if time.monotonic() >= next_sync:
                self._guarded(self.sync)
                next_sync = time.monotonic() + settings.POSTROOM_IDLE_SYNC_SECONDS
            wait = min(STOP_CHECK, max(0.0, next_sync - time.monotonic()))
            events = _drain(self.events, wait)
            if events:
                self._guarded(self.handle, events)

    def _guarded(self, work: Callable[..., None], *args: object, **kwargs: object) -> None:
        """A database that is away (restarting, migrating) is retried, not fatal; nor is a bug
        in one round, which must not take every other channel's push down with it."""
        try:
            close_old_connections()
            work(*args, **kwargs)
        except DatabaseError:
            logger.exception("IMAP IDLE listener: database error; retrying")
            with contextlib.suppress(DatabaseError):
                connection.close()
        except Exception:
            logger.exception("IMAP IDLE listener: %s failed; retrying", work.__name__)

    # -- the channel table -------------------------------------------------------------------

    def sync(self) -> None:
        now = timezone.now()
        idle_listener_heartbeat(owner=self.owner, now=now)
        if self._releasing:
            # Unwatched a sync ago: the LOGOUT is done, so no second listener overlaps.
            self._hand_back(self._releasing, now)
            self._releasing = {}
        if time.monotonic() >= self._renew_at:
            idle_leases_renew(owner=self.owner, now=now)
            self._renew_at = time.monotonic() + settings.POSTROOM_IDLE_LEASE_SECONDS / 3
        candidates = idle_candidates()
        self._drop_gone(candidates, now)
        share = idle_share(channels=len(candidates), now=now)
        if len(self._held) > share:
            self._give_back(len(self._held) - share)
        elif len(self._held) < share:
            self._take(candidates, share - len(self._held), now)
        self._follow_edits(candidates)

    def _drop_gone(self, candidates: dict[int, Candidate], now: datetime) -> None:
        for pk in list(self._held):
            candidate = candidates.get(pk)
            if candidate is None:  # deleted, offline, no longer IMAP or receiving
                self._unwatch(pk)
                Mailbox.objects.filter(pk=pk, idle_lease_owner=self.owner).update(
                    idle_lease_owner="",
                    idle_lease_expires_at=None,
                    push_state=PushState.NONE,
                    push_reason=PushReason.NONE,
                    push_detail="",
                    push_since=now,
                )
            elif candidate.owner != self.owner:  # our lease ran out and another took it
                logger.warning("channel %s: another listener took it over", pk)
                self._unwatch(pk)

    def _give_back(self, count: int) -> None:
        for pk in random.sample(sorted(self._held), count):
            self._releasing[pk] = self._unwatch(pk)
        logger.info("gave back %d channel(s) to share them with other listeners", count)

    def _take(self, candidates: dict[int, Candidate], wanted: int, now: datetime) -> None:
        # Ours but not held: claimed in a round that failed before it watched them.
        free = [
            pk
            for pk, c in candidates.items()
            if pk not in self._held
            and pk not in self._releasing
            and (c.free(now) or c.owner == self.owner)
        ]
        # In random order, so two listeners starting together rarely reach for the same rows.
        chosen = random.sample(free, min(wanted, len(free)))
        if chosen:
            won = idle_leases_claim(owner=self.owner, mailbox_ids=chosen, now=now)
            self._watch(_rows(pk__in=won))

    def _follow_edits(self, candidates: dict[int, Candidate]) -> None:
        edited = [pk for pk, h in self._held.items() if candidates[pk].updated_at != h.updated_at]
        if edited:
            self._watch(_rows(pk__in=edited, idle_lease_owner=self.owner))

    def _watch(self, mailboxes: Iterable[Mailbox]) -> None:
        """Listen with the channel's present settings (the same settings keep the connection)."""
        now, policy = timezone.now(), network_policy()
        changes = []
        for mailbox in mailboxes:
            held = self._held.get(mailbox.pk)
            if held is None:
                held = _Held(mailbox.updated_at, mailbox.refresh_interval, push_current(mailbox))
                self._held[mailbox.pk] = held
                # Still "push" from a listener that died holding it: polling until IDLE runs.
                stale = (PushState.POLLING, PushReason.STOPPED, STOPPED_DETAIL, now)
                if held.push.state == PushState.PUSH:
                    changes.append(self._push_change(mailbox.pk, held, *stale))
            held.updated_at, held.refresh_interval = mailbox.updated_at, mailbox.refresh_interval
            try:
                self.engine.watch(
                    mailbox.pk, mailbox_listen_settings(mailbox=mailbox), policy, _source(mailbox)
                )
            except Exception as exc:  # a secret no key decrypts, say: tried again when edited
                logger.exception("channel %s: cannot listen with its settings", mailbox.pk)
                self.engine.unwatch(mailbox.pk)
                detail = f"The listener could not use the channel's settings: {exc}"
                error = (PushState.POLLING, PushReason.ERROR, detail, now)
                changes.append(self._push_change(mailbox.pk, held, *error))
        if changes := [c for c in changes if c]:
            push_record(owner=self.owner, changes=changes, now=now)

    def _unwatch(self, pk: int) -> _Held:
        self.engine.unwatch(pk)
        return self._held.pop(pk)

    # -- what the engine heard ---------------------------------------------------------------

    def handle(self, events: list[IdleEvent]) -> None:
        now = timezone.now()
        changes: list[PushChange] = []
        polls: list[int] = []
        for event in events:
            held = self._held.get(event.key)
            if held is None:  # unwatched since
                continue
            if event.kind == NEW_MAIL or (event.kind == CONNECTED and held.catch_up):
                held.catch_up = False
                polls.append(event.key)
            if event.kind != NEW_MAIL and (change := self._on_state(event, held, now)):
                changes.append(change)
        if changes:
            push_record(owner=self.owner, changes=changes, now=now)
        for pk in dict.fromkeys(polls):
            _enqueue_poll(pk)

    def _on_state(self, event: IdleEvent, held: _Held, now: datetime) -> PushChange | None:
        state, reason = EVENT_STATES[event.kind]
        if event.kind == ERROR and held.push.reason == PushReason.GAVE_UP:
            reason = PushReason.GAVE_UP  # retries after giving up fail too: still given up
        if state != held.push.state:
            logger.info("channel %s: %s %s", event.key, state, event.detail or "(IMAP IDLE)")
        return self._push_change(event.key, held, state, reason, event.detail, now)

    def _push_change(
        self, pk: int, held: _Held, state: str, reason: str, detail: str, now: datetime
    ) -> PushChange | None:
        new = held.push.then(state, reason, detail, now)
        if new == held.push:
            return None
        left_push = held.push.state == PushState.PUSH and state != PushState.PUSH
        held.push = new
        return PushChange(pk, new, held.refresh_interval, left_push)

    # -- stopping ----------------------------------------------------------------------------

    def _leave(self) -> None:
        """Hand every channel back at once: polling until another listener takes it."""
        held, self._held = self._held, {}
        self._guarded(self._hand_back, {**self._releasing, **held}, timezone.now())
        self._guarded(idle_listener_leave, owner=self.owner)
        logger.info("IMAP IDLE listener %s stopped", self.owner)

    def _hand_back(self, channels: dict[int, _Held], now: datetime) -> None:
        """Polling (on the refresh interval) until another listener has IDLE running on them."""
        stopped = (PushState.POLLING, PushReason.STOPPED, STOPPED_DETAIL, now)
        changes = [self._push_change(pk, held, *stopped) for pk, held in channels.items()]
        push_record(owner=self.owner, changes=[c for c in changes if c], now=now)
        idle_leases_release(owner=self.owner, mailbox_ids=list(channels))


def _source(mailbox: Mailbox) -> MailboxTokenSource | None:
    """OAuth2 channels log in with a fresh access token at each (re)connection."""
    if mailbox.auth_type == Mailbox.AuthType.OAUTH2:
        return MailboxTokenSource(mailbox.pk)
    return None


def _rows(**where: object) -> Iterable[Mailbox]:
    """The fields listening needs. The password is read row by row as each is watched, so one
    secret no key decrypts fails its own channel, not every channel loaded with it."""
    return Mailbox.objects.filter(**where).only(*LISTEN_FIELDS)


def _drain(events: queue.Queue[IdleEvent], wait: float) -> list[IdleEvent]:
    """What the engine reported, waiting up to `wait` for the first event."""
    try:
        drained = [events.get(timeout=wait)] if wait > 0 else [events.get_nowait()]
    except queue.Empty:
        return []
    with contextlib.suppress(queue.Empty):
        while True:
            drained.append(events.get_nowait())
    return drained


def _enqueue_poll(mailbox_id: int) -> None:
    try:
        poll_mailbox.delay(mailbox_id)
    except Exception:
        # The broker is away: the dispatcher polls it instead, on its next tick.
        logger.exception("channel %s: could not enqueue a poll; asking the dispatcher", mailbox_id)
        poll_request_now(mailbox_id=mailbox_id)
