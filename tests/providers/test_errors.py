"""Errors carry a sentence for the administrator, a kind, and whether retrying can help."""

from __future__ import annotations

import pickle

import pytest

from providers.config import Credentials, SendGridSettings, ServerAddress
from providers.errors import (
    AddressBlocked,
    AuthenticationFailed,
    CertificateUntrusted,
    ConnectionRefused,
    ConnectionTimedOut,
    FolderMissing,
    HostNotFound,
    ProtocolError,
    ProviderError,
    TLSFailed,
    auth_refused,
)

KINDS = [
    (AuthenticationFailed, "auth", True),
    (HostNotFound, "host_not_found", True),
    (ConnectionRefused, "port_closed", False),
    (ConnectionTimedOut, "timeout", False),
    (TLSFailed, "tls", True),
    (CertificateUntrusted, "certificate", True),
    (FolderMissing, "folder_missing", True),
    (AddressBlocked, "blocked", True),
    (ProtocolError, "protocol", False),
]


@pytest.mark.parametrize(("cls", "kind", "permanent"), KINDS)
def test_it_names_each_kind_and_says_whether_retrying_helps(cls, kind, permanent):
    error = cls("Something an administrator can act on.")
    assert isinstance(error, ProviderError)
    assert (error.kind, error.permanent) == (kind, permanent)
    assert str(error) == error.message == "Something an administrator can act on."


def test_it_keeps_an_overridden_permanent_flag_through_pickling():
    error = HostNotFound("mail.example.com could not be found.", permanent=False)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HostNotFound
    assert (copy.message, copy.permanent) == (error.message, False)


def test_it_never_repeats_a_password_a_server_echoes():
    error = auth_refused("mail.example.com", "NO wrong password s3cret!", "s3cret!")
    assert "s3cret!" not in str(error)
    assert "mail.example.com refused the username or password" in str(error)


def test_it_keeps_secrets_out_of_settings_reprs():
    assert "s3cret" not in repr(Credentials("agent@example.com", "s3cret"))
    assert "SG.token" not in repr(SendGridSettings(api_token="SG.token"))


def test_it_refuses_an_unknown_security_setting():
    with pytest.raises(ValueError, match="security"):
        ServerAddress("mail.example.com", 993, "tls")
