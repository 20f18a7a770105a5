"""EncryptedTextField: a text column whose value is a Fernet token in the database."""

from __future__ import annotations

from django.db import models

from mailboxes import crypto


class EncryptedTextField(models.TextField):
    """Plaintext in Python, ciphertext in the database; "" stays "" (meaning "not set").

    Not searchable or orderable by design: nobody should look a secret up.
    """

    description = "Text encrypted at rest"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        kwargs.setdefault("editable", True)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value, expression, connection):
        if not value:
            return ""
        return crypto.decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return ""
        return crypto.encrypt(value)
