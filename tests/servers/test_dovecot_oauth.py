"""The OAuth variant of the Dovecot fixture: tokens from the local provider log in over
XOAUTH2 and OAUTHBEARER (checked by introspection), and passwords still work beside them."""

from __future__ import annotations

import base64
import poplib

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError


@pytest.fixture
def oauth_user(dovecot_oauth):
    return dovecot_oauth.add_user()


def imap(server) -> IMAPClient:
    return IMAPClient(
        server.host, port=server.ports.imaps, ssl=True, ssl_context=server.ssl_context(), timeout=10
    )


def test_it_takes_an_access_token_over_imap(dovecot_oauth, oauth_provider, oauth_user):
    token = oauth_provider.issue_token(oauth_user.address)
    client = imap(dovecot_oauth)
    try:
        assert b"AUTH=XOAUTH2" in client.capabilities()
        client.oauth2_login(oauth_user.address, token.access_token)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    finally:
        client.logout()


def test_it_refuses_an_expired_or_foreign_token(dovecot_oauth, oauth_provider, oauth_user):
    token = oauth_provider.issue_token(oauth_user.address)
    someone_else = oauth_provider.issue_token("someone@example.test")
    oauth_provider.expire_access_tokens()
    fresh_foreign = oauth_provider.issue_token("someone@example.test")
    for access_token in (token.access_token, someone_else.access_token, fresh_foreign.access_token):
        client = imap(dovecot_oauth)
        try:
            with pytest.raises(LoginError):
                client.oauth2_login(oauth_user.address, access_token)
        finally:
            client.shutdown()


def test_passwords_still_work_beside_tokens(dovecot_oauth, oauth_user):
    with dovecot_oauth.imap(oauth_user) as client:
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0


def test_it_takes_an_access_token_over_pop3(dovecot_oauth, oauth_provider, oauth_user):
    token = oauth_provider.issue_token(oauth_user.address)
    blob = f"user={oauth_user.address}\x01auth=Bearer {token.access_token}\x01\x01"
    client = poplib.POP3(dovecot_oauth.host, dovecot_oauth.ports.pop3, timeout=10)
    try:
        assert "XOAUTH2" in client.capa()["SASL"]
        client._putcmd("AUTH XOAUTH2")
        assert client._getresp().startswith(b"+")
        client._putcmd(base64.b64encode(blob.encode()).decode())
        assert client._getresp().startswith(b"+OK")
        assert client.stat() == (0, 0)
    finally:
        client.quit()


def test_it_takes_an_access_token_over_oauthbearer(dovecot_oauth, oauth_provider, oauth_user):
    token = oauth_provider.issue_token(oauth_user.address)
    client = imap(dovecot_oauth)
    try:
        assert b"AUTH=OAUTHBEARER" in client.capabilities()
        client.oauthbearer_login(oauth_user.address, token.access_token)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    finally:
        client.logout()


def test_the_xoauth2_variant_offers_xoauth2_only(dovecot_xoauth2, oauth_provider):
    user = dovecot_xoauth2.add_user()
    token = oauth_provider.issue_token(user.address)
    client = imap(dovecot_xoauth2)
    try:
        capabilities = client.capabilities()
        assert b"AUTH=XOAUTH2" in capabilities and b"AUTH=OAUTHBEARER" not in capabilities
        client.oauth2_login(user.address, token.access_token)
    finally:
        client.logout()
