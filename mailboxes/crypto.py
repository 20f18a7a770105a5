"""Secrets at rest: MultiFernet over POSTROOM_ENCRYPTION_KEYS (newest key first).

The first key encrypts; every key decrypts, so an operator adds a new key in front, runs
`manage.py rotate_secrets`, and only then drops the old one.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys can decrypt."""


@cache
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.POSTROOM_ENCRYPTION_KEYS])


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs) -> None:
    if setting == "POSTROOM_ENCRYPTION_KEYS":
        _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "A stored secret cannot be decrypted with POSTROOM_ENCRYPTION_KEYS: the key that "
            "encrypted it is missing. Put it back in the list (newest first)."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the newest key (it must decrypt under one of the keys)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("A stored secret cannot be decrypted for rotation.") from None
