"""Signals mailboxes sends for other apps; mailboxes never imports who listens (pollers does)."""

from django.dispatch import Signal

# Sent after commit when a channel should be polled at once ("Fetch now", a cursor reset).
# Arguments: mailbox_id.
poll_requested = Signal()
