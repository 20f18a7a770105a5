"""An administrator signs an OAuth2 channel in through Chromium: Postroom's sign-in button, the
local provider's consent page, back to the channel page. The channel reads the OAuth Dovecot
with the token; the token expires and is refreshed; the provider revokes the account and the
channel turns red and stops polling."""

from __future__ import annotations

import pytest

from mailboxes import oauth as mailbox_oauth
from mailboxes.models import InboundMessage, Mailbox
from pollers.schedule import poll_request_now, polls_claim_due
from pollers.services import mailbox_poll
from tests.mailboxes.conftest import SAMPLE
from tests.mailboxes.test_channel_browser import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def oauth_channel(settings, tmp_path, live_server, oauth_provider, dovecot_oauth, smtp):
    """A channel on the OAuth Dovecot and the SMTP fixture, registered at the provider with
    the live server's callback; not signed in yet."""
    settings.POSTROOM_BASE_URL = live_server.url
    settings.MEDIA_ROOT = str(tmp_path / "media")
    smtp.oauth_introspection_url = f"{oauth_provider.url}/introspect"
    app = oauth_provider.add_client(mailbox_oauth.callback_url())
    user = dovecot_oauth.add_user()
    mailbox = Mailbox.objects.create(
        name="Support",
        email_address=user.address,
        protocol=Mailbox.Protocol.IMAP,
        incoming_host="127.0.0.1",
        incoming_port=dovecot_oauth.ports.imaps,
        incoming_security="ssl",
        trust_self_signed=True,
        copy_to_sent=False,
        smtp_host="127.0.0.1",
        smtp_port=smtp.smtps_port,
        smtp_security="ssl",
        auth_type=Mailbox.AuthType.OAUTH2,
        oauth_provider=Mailbox.OAuthProvider.CUSTOM,
        oauth_client_id=app.client_id,
        oauth_client_secret=app.client_secret,
        oauth_discovery_url=oauth_provider.discovery_url,
    )
    return mailbox, user


def poll(mailbox: Mailbox):
    """The next scheduled poll, as the worker runs it."""
    return mailbox_poll(mailbox_id=mailbox.pk)


def status(page) -> tuple[str, str]:
    badge = page.locator(".field-status_badge .postroom-status")
    return badge.inner_text(), badge.evaluate("e => getComputedStyle(e).color")


GREEN, RED = "rgb(30, 142, 62)", "rgb(217, 48, 37)"


def test_sign_in_expiry_and_revocation_in_the_browser(
    page, django_user_model, oauth_provider, dovecot_oauth, oauth_channel
):
    mailbox, user = oauth_channel
    for n in range(2):
        dovecot_oauth.deliver(user, SAMPLE % n)
    sign_in(page, django_user_model)
    page.goto(f"/admin/mailboxes/mailbox/{mailbox.pk}/change/")
    assert "Not signed in yet" in page.inner_text(".field-oauth_sign_in")

    # Postroom's button, then the provider's own page on its loopback port.
    page.click("#oauth-sign-in")
    page.wait_for_selector("#allow")
    assert page.url.startswith(oauth_provider.authorize_url)
    page.fill("#account", user.address)
    page.click("#allow")

    # Back on the channel page: signed in, the connection tested with the token.
    page.wait_for_selector(".messagelist")
    notes = page.inner_text(".messagelist")
    assert f"signed in as {user.address}" in notes
    assert "2 messages in INBOX" in notes
    assert status(page) == ("● Working", GREEN)
    assert f"Signed in as {user.address}" in page.inner_text(".field-oauth_sign_in")
    mailbox.refresh_from_db()
    assert mailbox.oauth_access_token not in page.content()
    assert mailbox.oauth_refresh_token not in page.content()

    # The provider ends every access token early; the next poll refreshes and still fetches.
    assert poll(mailbox).error == ""  # the first poll sets the cursor: mail from now on
    first_token = mailbox.oauth_access_token
    oauth_provider.expire_access_tokens()
    dovecot_oauth.deliver(user, SAMPLE % 2)
    result = poll(mailbox)
    assert result.error == "" and result.stored == 1
    assert InboundMessage.objects.filter(mailbox=mailbox).count() == 1
    mailbox.refresh_from_db()
    assert mailbox.oauth_access_token != first_token
    page.reload()
    assert status(page) == ("● Working", GREEN)
    assert "last refreshed" in page.inner_text("#content").lower()

    # The provider revokes the account: red, "sign in again", and no more polls.
    oauth_provider.revoke_account(user.address)
    assert "Sign in again" in poll(mailbox).error
    page.reload()
    assert status(page) == ("● Error", RED)
    assert "Sign in again" in page.inner_text("#content")
    assert page.locator("#oauth-sign-in").is_visible()
    poll_request_now(mailbox_id=mailbox.pk)
    assert mailbox.pk not in polls_claim_due()
    assert not poll(mailbox).ran
