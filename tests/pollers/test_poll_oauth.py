"""An OAuth2 channel end to end: the administrator signs in at the local provider, and polls
and sends log in to Dovecot and the SMTP fixture with the access token (SASL XOAUTH2), both
checking it at the provider. Tokens expire and are refreshed; a revoked account stops the
channel until the administrator signs in again."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from django.urls import reverse

from mailboxes import oauth as mailbox_oauth
from mailboxes.models import InboundMessage, Mailbox
from pollers.outbox import outbox_send_due
from pollers.schedule import poll_request_now, polls_claim_due
from pollers.services import mailbox_poll
from tests.pollers.conftest import enqueue, message

pytestmark = pytest.mark.django_db


@pytest.fixture
def oauth_user(dovecot_oauth):
    return dovecot_oauth.add_user()


@pytest.fixture
def oauth_channel(dovecot_oauth, oauth_user, oauth_provider, smtp):
    """make(protocol): an OAuth2 channel on the OAuth Dovecot and the SMTP fixture, not yet
    signed in; both servers check tokens at the local provider."""
    smtp.oauth_introspection_url = f"{oauth_provider.url}/introspect"
    app = oauth_provider.add_client(mailbox_oauth.callback_url())

    def make(protocol: str = "imap", **fields) -> Mailbox:
        ports = dovecot_oauth.ports
        values = {
            "name": f"Support {oauth_user.name}",
            "email_address": oauth_user.address,
            "protocol": protocol,
            "incoming_host": "127.0.0.1",
            "incoming_port": ports.imaps if protocol == "imap" else ports.pop3s,
            "incoming_security": "ssl",
            "trust_self_signed": True,
            "copy_to_sent": False,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.smtps_port,
            "smtp_security": "ssl",
            "auth_type": Mailbox.AuthType.OAUTH2,
            "oauth_provider": Mailbox.OAuthProvider.CUSTOM,
            "oauth_client_id": app.client_id,
            "oauth_client_secret": app.client_secret,
            "oauth_discovery_url": oauth_provider.discovery_url,
            **fields,
        }
        return Mailbox.objects.create(**values)

    return make


def sign_in(client, provider, mailbox: Mailbox) -> str:
    """Press the sign-in button, allow on the provider's page, come back; the page shown."""
    start = reverse("admin:mailboxes_mailbox_oauth_start", args=[mailbox.pk])
    url = client.post(start)["Location"]
    form = {**dict(parse_qsl(urlsplit(url).query)), "account": mailbox.email_address}
    back = httpx.post(provider.authorize_url, data={**form, "decision": "allow"})
    parts = urlsplit(back.headers["location"])
    page = client.get(f"{parts.path}?{parts.query}", follow=True).content.decode()
    mailbox.refresh_from_db()
    return page


@pytest.fixture
def poll_now():
    def run(mailbox: Mailbox):
        result = mailbox_poll(mailbox_id=mailbox.pk)
        mailbox.refresh_from_db()
        return result

    return run


def stored(mailbox: Mailbox) -> int:
    return InboundMessage.objects.filter(mailbox=mailbox).count()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_after_sign_in_polls_log_in_with_the_token_and_fetch(
    admin_client, oauth_provider, dovecot_oauth, oauth_user, oauth_channel, poll_now, protocol
):
    dovecot_oauth.deliver(oauth_user, message(1))
    mailbox = oauth_channel(protocol)

    page = sign_in(admin_client, oauth_provider, mailbox)

    # "Test connection" ran after the sign-in, with the token, on both servers.
    assert "1 messages in INBOX." in page
    assert "The outgoing server accepted the login." in page
    assert mailbox.status == Mailbox.Status.OK
    assert mailbox.oauth_access_token not in page

    poll_now(mailbox)  # the first poll sets the cursor: mail from now on
    dovecot_oauth.deliver(oauth_user, message(2))
    result = poll_now(mailbox)

    assert result.error == "" and result.stored == 1 and stored(mailbox) == 1
    assert mailbox.status == Mailbox.Status.OK


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_token_the_provider_ended_is_refreshed_and_the_poll_still_fetches(
    admin_client, oauth_provider, dovecot_oauth, oauth_user, oauth_channel, poll_now, protocol
):
    mailbox = oauth_channel(protocol)
    sign_in(admin_client, oauth_provider, mailbox)
    poll_now(mailbox)
    first_token = mailbox.oauth_access_token
    oauth_provider.expire_access_tokens()  # Postroom still believes it has an hour
    dovecot_oauth.deliver(oauth_user, message(3))

    result = poll_now(mailbox)

    assert result.error == "" and result.stored == 1
    assert mailbox.oauth_access_token != first_token
    assert mailbox.oauth_rotated_at is not None  # the provider rotates refresh tokens
    assert [r["grant_type"] for r in oauth_provider.token_requests].count("refresh_token") == 1


def test_a_token_about_to_expire_is_refreshed_before_the_login(
    admin_client, oauth_provider, dovecot_oauth, oauth_user, oauth_channel, poll_now
):
    oauth_provider.access_token_lifetime = 20  # less than REFRESH_MARGIN: refresh before use
    mailbox = oauth_channel()
    sign_in(admin_client, oauth_provider, mailbox)  # its connection test refreshed once
    refreshes = [r["grant_type"] for r in oauth_provider.token_requests].count("refresh_token")
    dovecot_oauth.deliver(oauth_user, message(4))

    poll_now(mailbox)

    after = [r["grant_type"] for r in oauth_provider.token_requests].count("refresh_token")
    assert after == refreshes + 1  # one refresh per poll, none after a refused login
    assert mailbox.status == Mailbox.Status.OK


def test_a_revoked_account_turns_the_channel_red_and_pauses_it_until_a_new_sign_in(
    admin_client,
    admin_user,
    oauth_provider,
    dovecot_oauth,
    oauth_user,
    oauth_channel,
    poll_now,
    mailoutbox,
    django_capture_on_commit_callbacks,
):
    mailbox = oauth_channel()
    sign_in(admin_client, oauth_provider, mailbox)
    poll_now(mailbox)
    oauth_provider.revoke_account(oauth_user.address)

    with django_capture_on_commit_callbacks(execute=True):
        result = poll_now(mailbox)
        poll_now(mailbox)  # not attempted: the channel waits for a sign-in

    assert "Sign in again" in result.error
    assert mailbox.status == Mailbox.Status.ERROR
    assert "Sign in again" in mailbox.status_message
    assert mailbox.outbox_paused and "Sign in again" in mailbox.outbox_paused_reason
    page = admin_client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]))
    assert "Sign in again" in page.content.decode()
    # Polling has stopped: the dispatcher skips the channel even when it is due.
    poll_request_now(mailbox_id=mailbox.pk)
    assert mailbox.pk not in polls_claim_due()
    assert not poll_now(mailbox).ran
    # The administrators heard of it once, not at every poll; no token in the mail.
    [mail] = mailoutbox
    assert mail.to == [admin_user.email] and "needs a new sign-in" in mail.subject
    assert mailbox.oauth_refresh_token not in mail.body

    with django_capture_on_commit_callbacks(execute=True):
        sign_in(admin_client, oauth_provider, mailbox)

    assert mailbox.oauth_refused_at is None and not mailbox.outbox_paused
    assert mailbox.status == Mailbox.Status.OK
    assert mailbox.pk in polls_claim_due()
    dovecot_oauth.deliver(oauth_user, message(5))
    assert poll_now(mailbox).stored == 1


def test_a_reply_goes_out_through_smtp_with_xoauth2(
    admin_client, oauth_provider, oauth_user, oauth_channel, smtp
):
    mailbox = oauth_channel()
    sign_in(admin_client, oauth_provider, mailbox)
    enqueue(mailbox)

    run = outbox_send_due(mailbox_id=mailbox.pk)

    assert run.sent == 1
    [received] = smtp.wait_for(1)
    assert received.login == oauth_user.address


def test_a_token_the_smtp_server_refuses_is_refreshed_once_and_the_reply_still_goes(
    admin_client, oauth_provider, oauth_user, oauth_channel, smtp
):
    mailbox = oauth_channel()
    sign_in(admin_client, oauth_provider, mailbox)
    first_token = mailbox.oauth_access_token
    rows = [enqueue(mailbox), enqueue(mailbox)]
    oauth_provider.expire_access_tokens()  # Postroom still believes it has an hour

    run = outbox_send_due(mailbox_id=mailbox.pk)

    assert run.sent == 2 and not run.paused
    mailbox.refresh_from_db()
    assert not mailbox.outbox_paused and mailbox.oauth_access_token != first_token
    for row in rows:
        row.refresh_from_db()
        assert row.state == row.State.SENT and row.attempts == 1  # the refusal cost nothing
    assert [r["grant_type"] for r in oauth_provider.token_requests].count("refresh_token") == 1


def test_a_revoked_account_pauses_the_outbox_without_spending_attempts(
    admin_client, oauth_provider, oauth_user, oauth_channel, smtp
):
    mailbox = oauth_channel()
    sign_in(admin_client, oauth_provider, mailbox)
    row = enqueue(mailbox)
    oauth_provider.revoke_account(oauth_user.address)

    run = outbox_send_due(mailbox_id=mailbox.pk)

    assert run.paused and run.sent == 0
    mailbox.refresh_from_db()
    assert mailbox.outbox_paused and "Sign in again" in mailbox.outbox_paused_reason
    row.refresh_from_db()
    assert row.state == row.State.QUEUED and row.attempts == 0
