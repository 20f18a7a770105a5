"""`manage.py reprocess --failed [--channel NAME]`: run the pipeline again on failed mail.

For after a fix (a flow repaired, a parser bug gone): each stored message that failed is
processed again; what it already did is not done twice (cases.services.inbound_replay).
"""

from __future__ import annotations

from collections import Counter

from django.core.management.base import BaseCommand

from cases.services import inbound_replay
from mailboxes.models import InboundMessage
from pollers.management.commands._channels import channel_named


class Command(BaseCommand):
    help = "Process failed stored messages again and print what became of them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--failed",
            action="store_true",
            required=True,
            help="Reprocess the messages whose processing failed (required: says what to redo).",
        )
        parser.add_argument("--channel", help="Only this channel (name or channel ID).")

    def handle(self, *args, channel: str | None = None, **options):
        rows = InboundMessage.objects.filter(outcome=InboundMessage.Outcome.FAILED)
        where = ""
        if channel:
            mailbox = channel_named(channel)
            rows = rows.filter(mailbox=mailbox)
            where = f' of "{mailbox.name}"'
        ids = list(rows.order_by("pk").values_list("pk", flat=True))
        outcomes = Counter(inbound_replay(message_id=pk) for pk in ids)
        summary = ", ".join(f"{outcome} {n}" for outcome, n in sorted(outcomes.items()))
        self.stdout.write(
            f"Reprocessed {len(ids)} failed message(s){where}" + (f": {summary}." if ids else ".")
        )
        if outcomes[InboundMessage.Outcome.FAILED]:
            self.stdout.write("Those still failing keep their reason (admin: Received messages).")
