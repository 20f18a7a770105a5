"""The channel's sender filter, as the channel form describes it."""

from __future__ import annotations

import pytest

from cases.filtering import sender_filter_check

CASES = [
    ("", "anyone@example.org", True),
    ("!spam@example.org", "spam@example.org", False),
    ("!spam@example.org", "ham@example.org", True),
    ("!@spam.test", "x@mail.spam.test", False),
    ("!*@spam.test", "x@spam.test", False),
    ("@example.org", "carol@example.org", True),
    ("@example.org", "carol@example.net", False),
    ("example.org", "carol@example.org", True),
    ("carol@example.org\n# a note\n", "CAROL@example.org", True),
    ("*@example.org\n!boss@example.org", "boss@example.org", False),
    ("dept-?@example.org", "dept-a@example.org", True),
    ("@example.org", "", False),
]


@pytest.mark.parametrize(("rules", "address", "allowed"), CASES)
def test_it_allows_and_refuses_as_the_rules_say(rules, address, allowed):
    verdict = sender_filter_check(rules=rules, address=address)
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.reason
