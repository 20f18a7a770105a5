"""Channel configuration and what a channel has received."""

from mailboxes.models.inbound import ErasedMessage, InboundMessage, KnownUidl, ProcessingStep
from mailboxes.models.mailbox import Alias, Mailbox, Security, new_channel_id
from mailboxes.models.outbound import OutboundMessage

# new_channel_id stays importable here: migrations refer to mailboxes.models.new_channel_id.
__all__ = [
    "Alias",
    "ErasedMessage",
    "InboundMessage",
    "KnownUidl",
    "Mailbox",
    "OutboundMessage",
    "ProcessingStep",
    "Security",
    "new_channel_id",
]
