"""`manage.py listen`: hold IMAP IDLE connections and enqueue a poll when mail arrives.

Run one or more (on this machine or others, against the same database): they share the
channels. SIGTERM or Ctrl-C logs out from every server and hands the channels back.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from pollers.listener import ChannelListener


class Command(BaseCommand):
    help = "Listen for new mail over IMAP IDLE and enqueue polls (runs until stopped)."

    def handle(self, *args, **options):
        stop = threading.Event()

        def request_stop(signum, frame):  # noqa: ARG001 - signal handler signature
            stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        listener = ChannelListener()
        self.stdout.write(f"Listening for new mail (IMAP IDLE) as {listener.owner}.")
        self.stdout.flush()
        listener.run(stop)
        self.stdout.write("Listener stopped.")
