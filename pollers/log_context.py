"""Which channel the current work is for, so every log line written meanwhile can say so.

channels_app.logging reads it (with the Celery task id) into each record; pollers sets it
around a poll, a send and a round-trip probe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the logging configuration, before the apps are loaded
    from mailboxes.models import Mailbox

_channel: ContextVar[tuple[str, str] | None] = ContextVar("postroom_channel", default=None)


@contextlib.contextmanager
def channel_logged(mailbox: Mailbox) -> Iterator[None]:
    token = _channel.set((mailbox.channel_id, mailbox.name))
    try:
        yield
    finally:
        _channel.reset(token)


def current_channel() -> tuple[str, str] | None:
    """(channel id, name) of the channel being worked on, or None."""
    return _channel.get()
