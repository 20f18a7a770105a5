"""Re-encrypt every stored secret under the newest key in POSTROOM_ENCRYPTION_KEYS.

Rotation: put a new key first in the list (keep the old one after it), restart, run this,
then drop the old key.
"""

from django.core.management.base import BaseCommand, CommandError

from mailboxes.crypto import SecretUnreadable
from mailboxes.services import secrets_rotate


class Command(BaseCommand):
    help = "Re-encrypt stored passwords and tokens under the newest encryption key."

    def handle(self, *args, **options):
        try:
            count = secrets_rotate()
        except SecretUnreadable as err:
            raise CommandError(str(err)) from None
        self.stdout.write(
            self.style.SUCCESS(f"Re-encrypted {count} secret(s) under the newest key.")
        )
