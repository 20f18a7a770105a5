"""A listener misconfigured is refused at start, with the setting to change named."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError


def test_renewing_idle_later_than_rfc_2177_allows_is_refused(settings):
    settings.POSTROOM_IDLE_RENEW_SECONDS = 30 * 60

    with pytest.raises(SystemCheckError, match=r"pollers.E001.*POSTROOM_IDLE_RENEW_SECONDS"):
        call_command("check")


def test_a_lease_too_short_to_renew_between_syncs_is_refused(settings):
    settings.POSTROOM_IDLE_LEASE_SECONDS = 4
    settings.POSTROOM_IDLE_SYNC_SECONDS = 2

    with pytest.raises(SystemCheckError, match=r"pollers.E002"):
        call_command("check")


def test_the_defaults_pass():
    call_command("check")
