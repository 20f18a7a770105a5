"""`manage.py poll NAME`: poll one channel now, in this process, and say what it did.

For an operator at a terminal: the same poll a worker runs (lease, store first, after-import
action, pipeline), with a progress bar while a large folder comes in.
"""

from __future__ import annotations

import time
from collections import Counter

from django.core.management.base import BaseCommand, CommandError

from mailboxes.models import InboundMessage, Mailbox
from mailboxes.services import mailbox_incoming_settings, mailbox_with_token, network_policy
from mailboxes.storage import pop3_seen_uidls
from pollers.management.commands._channels import channel_named
from pollers.services import mailbox_poll
from providers.errors import ProviderError
from providers.imap import imap_connect
from providers.imap_folder import ImapFolder
from providers.pop3 import pop3_connect
from providers.pop3_maildrop import Pop3Maildrop

BAR_WIDTH = 30
LARGE = 500  # without a terminal, a line per batch from this many messages on
ACTIONS = {
    Mailbox.AfterImport.SEEN: "marked as read on the server",
    Mailbox.AfterImport.MOVE: "moved to {folder} on the server",
    Mailbox.AfterImport.DELETE: "deleted from the server",
}


class Command(BaseCommand):
    help = "Poll one channel now, in this process, and print what it stored and processed."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The channel's name or channel ID.")

    def handle(self, *args, name: str, **options):
        mailbox = channel_named(name)
        if not mailbox.is_polled:
            raise CommandError(
                f'"{mailbox.name}" is offline or outbound-only: take it online in the admin '
                "(or tick “receive emails”) first."
            )
        progress = Progress(self.stdout, waiting(mailbox))
        started = time.monotonic()
        result = mailbox_poll(mailbox_id=mailbox.pk, on_batch=progress.batch)
        progress.end()
        if not result.ran:
            raise CommandError(
                f'"{mailbox.name}" is being polled by a worker right now; it will poll once '
                "more when done. Try again in a minute."
            )
        self._report(mailbox, progress.ids, time.monotonic() - started)
        if result.error:
            raise CommandError(f"The poll failed: {result.error}")

    def _report(self, mailbox: Mailbox, ids: list[int], seconds: float) -> None:
        mailbox.refresh_from_db()
        rows = InboundMessage.objects.filter(pk__in=ids)
        outcomes = Counter(rows.values_list("outcome", flat=True))
        self.stdout.write(
            f'Polled "{mailbox.name}" ({mailbox.channel_id}) in {seconds:.1f} s: '
            f"{len(ids)} message(s) stored."
        )
        if not ids:
            if mailbox.cursor_note and mailbox.last_poll_stored == 0:
                self.stdout.write(f"  {mailbox.cursor_note}")
            return
        counts = ", ".join(f"{label.lower()} {outcomes[value]}" for value, label in OUTCOMES)
        self.stdout.write(f"  {counts}")
        if probes := len(ids) - sum(outcomes.values()):
            self.stdout.write(f"  {probes} round-trip probe(s), measured and removed")
        if action := ACTIONS.get(mailbox.after_import):
            done = rows.filter(server_action_done=True).count()
            self.stdout.write(f"  {done} {action.format(folder=mailbox.move_to_folder)}")
        if outcomes[InboundMessage.Outcome.FAILED]:
            self.stdout.write(
                "  Failed messages are kept with the reason (admin: Received messages); "
                f'retry them with: manage.py reprocess --failed --channel "{mailbox.name}"'
            )


OUTCOMES = [
    (InboundMessage.Outcome.PROCESSED, "Processed"),
    (InboundMessage.Outcome.IGNORED, "Ignored"),
    (InboundMessage.Outcome.HELD, "Held"),
    (InboundMessage.Outcome.FAILED, "Failed"),
    (InboundMessage.Outcome.PENDING, "Pending"),
]


class Progress:
    """A bar redrawn in place on a terminal; elsewhere a line per batch for large folders."""

    def __init__(self, out, total: int | None) -> None:
        self.out, self.total = out, total
        self.tty = out.isatty()
        self.ids: list[int] = []

    def batch(self, rows: list[InboundMessage]) -> None:
        self.ids += [row.pk for row in rows]
        done, total = len(self.ids), self.total
        if self.tty and total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.out.write(f"\r[{bar}] {done}/{total} stored", ending="")
            self.out.flush()
        elif total and total >= LARGE:
            self.out.write(f"{done}/{total} stored")

    def end(self) -> None:
        if self.tty and self.total and self.ids:
            self.out.write("")  # leave the bar's line


def waiting(mailbox: Mailbox) -> int | None:
    """How many messages the poll will fetch, for the bar; None when that cannot be told
    (not connected yet, or the server is out of reach: the poll then says why)."""
    if mailbox.cursor_set_at is None:
        return None
    count = _pop3_waiting if mailbox.protocol == Mailbox.Protocol.POP3 else _imap_waiting
    try:
        return mailbox_with_token(
            mailbox=mailbox, build=mailbox_incoming_settings, use=lambda s: count(mailbox, s)
        )
    except ProviderError:
        return None


def _imap_waiting(mailbox: Mailbox, incoming) -> int | None:
    with imap_connect(incoming, network_policy()) as client:
        folder = ImapFolder(client, mailbox.folder, readonly=True)
        if folder.state.uidvalidity != mailbox.uidvalidity:
            return None  # the poll rescans
        return len(folder.uids_after(mailbox.last_uid or 0))


def _pop3_waiting(mailbox: Mailbox, incoming) -> int:
    seen = pop3_seen_uidls(mailbox=mailbox)
    with pop3_connect(incoming, network_policy()) as client:
        maildrop = Pop3Maildrop(client)
        count = sum(1 for m in maildrop.messages() if m.uidl not in seen)
        maildrop.quit()
        return count
