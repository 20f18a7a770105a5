"""`manage.py test_channel NAME`: the admin's "Test connection", from a shell.

Logs in to the channel's incoming and outgoing servers, prints each side's result, records it
on the channel as the admin does, and exits non-zero when either side failed.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from mailboxes.models import Mailbox
from mailboxes.services import ConnectionReport, mailbox_test_connection
from pollers.management.commands._channels import channel_named


class Command(BaseCommand):
    help = "Test a channel's incoming and outgoing servers; exit status 1 if either fails."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The channel's name or channel ID.")

    def handle(self, *args, name: str, **options):
        mailbox = channel_named(name)
        report = mailbox_test_connection(mailbox=mailbox)
        self.stdout.write(f'Channel "{mailbox.name}" ({mailbox.channel_id}):')
        self.stdout.write(f"  Incoming ({incoming_server(mailbox)}): {incoming(mailbox, report)}")
        self.stdout.write(f"  Outgoing ({outgoing_server(mailbox)}): {outgoing(report)}")
        for note in report.notes:
            self.stdout.write(f"  Note: {note}")
        if not report.ok or (report.notes and report.check is None and mailbox.listen):
            raise CommandError("The connection test failed.", returncode=1)
        self.stdout.write(self.style.SUCCESS("The connection test passed."))


def incoming_server(mailbox: Mailbox) -> str:
    if not mailbox.listen:
        return "not used"
    return f"{mailbox.get_protocol_display()} {mailbox.incoming_host}:{mailbox.incoming_port}"


def outgoing_server(mailbox: Mailbox) -> str:
    if mailbox.server_type == Mailbox.ServerType.SENDGRID:
        return "SendGrid API"
    return f"SMTP {mailbox.smtp_host}:{mailbox.smtp_port}"


def incoming(mailbox: Mailbox, report: ConnectionReport) -> str:
    if not mailbox.listen:
        return "outbound-only channel, nothing to test"
    if error := report.errors.get("incoming"):
        return f"FAILED: {error}"
    if report.check is None:
        return "not tested"
    return f"OK, {report.check.message_count} message(s) in {mailbox.folder}"


def outgoing(report: ConnectionReport) -> str:
    if error := report.errors.get("outgoing"):
        return f"FAILED: {error}"
    if report.notes and report.check is None:
        return "not tested"
    return "OK, the server accepted the login"
