"""The operator's commands, run as an operator runs them, against the real Dovecot and SMTP
servers: poll one channel now, test a channel, reprocess what failed."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from cases.models import Case
from mailboxes.models import InboundMessage, Mailbox
from tests.pollers.conftest import message

pytestmark = pytest.mark.django_db
Outcome = InboundMessage.Outcome


def broken_flow(incoming):
    raise RuntimeError("the flow's service is down")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*args, stdout=None) -> str:
    out = stdout or io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def broken(settings):
    """A flow that fails every message, as a misconfigured deployment's would."""
    flows = dict(settings.POSTROOM_FLOWS)
    flows["broken"] = ("Broken", "Fails", "tests.pollers.test_commands.broken_flow")
    settings.POSTROOM_FLOWS = flows


def test_poll_fetches_now_and_says_what_it_did(connected, dovecot, mail_user):
    mailbox = connected(after_import=Mailbox.AfterImport.DELETE)
    for n in range(3):
        dovecot.deliver(mail_user, message(n, body="Where is my parcel?"))

    out = run("poll", mailbox.name)

    assert f'Polled "{mailbox.name}" ({mailbox.channel_id})' in out
    assert "3 message(s) stored." in out
    assert "processed 3, ignored 0, held 0, failed 0" in out
    assert "3 deleted from the server" in out
    assert dovecot.folder_uids(mail_user) == []
    assert Case.objects.filter(mailbox=mailbox).count() == 3


def test_poll_draws_a_progress_bar_on_a_terminal(connected, dovecot, mail_user):
    mailbox = connected()
    for n in range(4):
        dovecot.deliver(mail_user, message(n))

    out = run("poll", mailbox.channel_id, stdout=Terminal())

    assert "\r[" + "#" * 30 + "] 4/4 stored" in out
    assert "4 message(s) stored." in out


def test_poll_refuses_an_unknown_or_offline_channel(connected):
    mailbox = connected()
    with pytest.raises(
        CommandError, match=f'No channel is named "Nope". Channels: "{mailbox.name}"'
    ):
        run("poll", "Nope")
    Mailbox.objects.filter(pk=mailbox.pk).update(enabled=False)
    with pytest.raises(CommandError, match="offline or outbound-only"):
        run("poll", mailbox.name)


def test_poll_reports_a_server_it_cannot_reach(connected, dovecot):
    mailbox = connected()
    Mailbox.objects.filter(pk=mailbox.pk).update(password="not-the-password-1")
    with pytest.raises(CommandError, match="The poll failed") as failed:
        run("poll", mailbox.name)
    assert "not-the-password-1" not in str(failed.value)


def test_failed_mail_is_reprocessed_once_the_flow_works(connected, dovecot, mail_user, broken):
    mailbox = connected(flow="broken")
    for n in range(2):
        dovecot.deliver(mail_user, message(n))
    out = run("poll", mailbox.name)
    assert "failed 2" in out
    assert "reprocess --failed" in out

    Mailbox.objects.filter(pk=mailbox.pk).update(flow="create_case")
    out = run("reprocess", "--failed", "--channel", mailbox.name)

    assert f'Reprocessed 2 failed message(s) of "{mailbox.name}": processed 2.' in out
    assert not InboundMessage.objects.filter(outcome=Outcome.FAILED).exists()
    assert Case.objects.filter(mailbox=mailbox).count() == 2
    assert run("reprocess", "--failed") == "Reprocessed 0 failed message(s).\n"


def test_reprocess_says_what_is_still_failing(connected, dovecot, mail_user, broken):
    mailbox = connected(flow="broken")
    dovecot.deliver(mail_user, message(1))
    run("poll", mailbox.name)

    out = run("reprocess", "--failed")

    assert "Reprocessed 1 failed message(s): failed 1." in out
    row = InboundMessage.objects.get(mailbox=mailbox)
    assert "the flow's service is down" in row.outcome_reason


def test_test_channel_prints_each_side_and_passes(sender, smtp):
    mailbox = sender(name="Support desk")

    out = run("test_channel", "Support desk")

    assert f"Incoming (IMAP 127.0.0.1:{mailbox.incoming_port}): OK, 0 message(s) in INBOX" in out
    assert f"Outgoing (SMTP 127.0.0.1:{smtp.starttls_port}): OK" in out
    assert "The connection test passed." in out
    mailbox.refresh_from_db()
    assert mailbox.status == Mailbox.Status.OK


def test_test_channel_fails_with_a_non_zero_exit_and_no_password(sender, smtp):
    mailbox = sender(name="Support desk", smtp_password="wrong-smtp-password-7")
    out = io.StringIO()

    with pytest.raises(CommandError) as failed:
        run("test_channel", mailbox.channel_id, stdout=out)

    assert failed.value.returncode == 1
    text = out.getvalue()
    assert "Incoming (IMAP" in text and "): OK" in text
    assert "Outgoing (SMTP" in text and "FAILED:" in text
    assert "wrong-smtp-password-7" not in text
    mailbox.refresh_from_db()
    assert mailbox.status == Mailbox.Status.ERROR
