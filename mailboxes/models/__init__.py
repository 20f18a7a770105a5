"""Channel configuration and what a channel has received."""

from mailboxes.models.inbound import InboundMessage, KnownUidl, ProcessingStep
from mailboxes.models.mailbox import Alias, Mailbox, Security, new_channel_id

# new_channel_id stays importable here: migrations refer to mailboxes.models.new_channel_id.
__all__ = [
    "Alias",
    "InboundMessage",
    "KnownUidl",
    "Mailbox",
    "ProcessingStep",
    "Security",
    "new_channel_id",
]
