"""The laptop broker (a folder) hands a worker only whole messages, however fast they come.

kombu's own file-system transport lets a reader take a message file before it is written
(JSONDecodeError, and the worker's consumer dies); with the IMAP IDLE listener enqueueing a
poll per notification, that happened within seconds in the benchmark.
"""

from __future__ import annotations

import threading

from kombu import Connection

MESSAGES = 3000


def test_a_worker_reading_while_tasks_are_queued_gets_every_message_whole(tmp_path):
    folders = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),
    }
    options = {**folders, "store_processed": False, "polling_interval": 0}
    transport = "channels_app.broker:Transport"  # what settings choose for filesystem://
    with (
        Connection(transport=transport, transport_options=options) as writer,
        Connection(transport=transport, transport_options=options) as reader,
    ):
        polls, worker = writer.SimpleQueue("polls"), reader.SimpleQueue("polls")
        enqueue = threading.Thread(target=lambda: [polls.put(n) for n in range(MESSAGES)])
        enqueue.start()
        received = []
        while len(received) < MESSAGES:
            message = worker.get(timeout=10)
            received.append(message.payload)
            message.ack()
        enqueue.join()

    assert sorted(received) == list(range(MESSAGES))
