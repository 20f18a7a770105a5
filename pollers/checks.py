"""System checks for the polling and IMAP IDLE settings: a misconfiguration says what to set."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

# RFC 2177: a client re-issues IDLE at least every 29 minutes, or the server may log it off.
IDLE_RENEW_LIMIT = 29 * 60


@register()
def idle_settings_check(app_configs, **kwargs) -> list[Error]:
    errors = []
    renew = settings.POSTROOM_IDLE_RENEW_SECONDS
    if not 0 < renew < IDLE_RENEW_LIMIT:
        errors.append(
            Error(
                f"POSTROOM_IDLE_RENEW_SECONDS is {renew}.",
                hint=f"Set it between 1 and {IDLE_RENEW_LIMIT - 1} (RFC 2177: re-issue IDLE "
                "within 29 minutes); the default is 540.",
                id="pollers.E001",
            )
        )
    lease, sync = settings.POSTROOM_IDLE_LEASE_SECONDS, settings.POSTROOM_IDLE_SYNC_SECONDS
    if sync <= 0 or lease < 3 * sync:
        errors.append(
            Error(
                f"POSTROOM_IDLE_LEASE_SECONDS ({lease:g}) is not at least three times "
                f"POSTROOM_IDLE_SYNC_SECONDS ({sync:g}).",
                hint="A listener renews its leases between syncs; with a lease this short a "
                "live listener's channels go to another. Defaults: 60 and 2.",
                id="pollers.E002",
            )
        )
    return errors
