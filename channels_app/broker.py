"""The laptop broker: kombu's file-system transport, whose messages appear in the queue whole.

kombu creates a message's file in the queue folder and then writes it; a worker listing the
folder in between takes the empty file, and its consumer dies on the JSON it cannot parse.
Here the message is written beside the queue under a name no queue matches, then renamed in,
which is atomic on one file system. The IMAP IDLE listener enqueues a poll the moment mail
arrives, and workers look every 50 ms (settings), so the race is no longer rare.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # kombu's name: milliseconds first, so the queue reads oldest first.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
