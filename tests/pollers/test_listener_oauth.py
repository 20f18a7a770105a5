"""Push for OAuth2 channels: the IMAP IDLE listener logs in to the OAuth Dovecot with the
channel's access token, asking for a fresh one at each connection, and refreshes once when
Dovecot refuses a token the provider ended early."""

from __future__ import annotations

import pytest

from tests.pollers import test_poll_oauth as story
from tests.pollers.conftest import message
from tests.pollers.listening import wait_for_push, wait_for_stored
from tests.pollers.test_poll_oauth import sign_in

# The OAuth channel stories' fixtures, shared.
oauth_user, oauth_channel, poll_now = story.oauth_user, story.oauth_channel, story.poll_now

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600


def test_a_signed_in_oauth_channel_is_on_push_and_refreshes_a_refused_token(
    admin_client, oauth_provider, dovecot_oauth, oauth_user, oauth_channel, poll_now, listen
):
    mailbox = oauth_channel(refresh_interval=HOUR)
    sign_in(admin_client, oauth_provider, mailbox)
    poll_now(mailbox)  # the cursor: mail from now on
    first_token = mailbox.oauth_access_token
    oauth_provider.expire_access_tokens()  # Postroom still believes it has an hour

    listener = listen()
    wait_for_push(mailbox)
    dovecot_oauth.deliver(oauth_user, message(1, subject="Pushed"))

    # Nothing else polls: no beat runs, and the refresh interval is an hour.
    assert wait_for_stored(mailbox) == ["Pushed 1"]
    mailbox.refresh_from_db()
    assert mailbox.oauth_access_token != first_token
    assert first_token not in listener.output() and mailbox.oauth_access_token not in (
        listener.output()
    )
