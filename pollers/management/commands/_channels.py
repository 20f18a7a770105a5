"""What the channel commands share: finding a channel by what an operator types."""

from __future__ import annotations

from django.core.management.base import CommandError

from mailboxes.models import Mailbox

LISTED = 10


def channel_named(name: str) -> Mailbox:
    """The channel with this name (any case) or channel ID, or an error naming some."""
    found = (
        Mailbox.objects.filter(name__iexact=name).first()
        or Mailbox.objects.filter(channel_id=name).first()
    )
    if found is not None:
        return found
    names = list(Mailbox.objects.values_list("name", flat=True)[:LISTED])
    known = ", ".join(f'"{n}"' for n in names) if names else "none yet"
    raise CommandError(f'No channel is named "{name}". Channels: {known}.')
