"""Signals mailboxes sends for other apps; mailboxes never imports who listens (pollers does)."""

from django.dispatch import Signal

# Sent after commit when a channel should be polled at once ("Fetch now", a cursor reset).
# Arguments: mailbox_id.
poll_requested = Signal()

# Sent after commit when a channel's outbox has something to send. Arguments: mailbox_id.
send_requested = Signal()

# Sent after commit when the administrator starts an import of older mail. Arguments: mailbox_id.
import_requested = Signal()
