"""Who may open a case on a channel: the sender filter (seed 001) and the channel's own addresses.

The filter is stored as the channel form describes it (`Mailbox.sender_filter`): one rule per
line, an address, "@domain" or a pattern with * and ?; "!" in front refuses. Refusing rules win;
with any allow rule, senders no allow rule matches are refused. Lines starting with # are notes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from mailboxes.models import Mailbox


@dataclass(frozen=True)
class FilterVerdict:
    allowed: bool
    reason: str = ""


def sender_filter_check(*, rules: str, address: str) -> FilterVerdict:
    address = address.strip().lower()
    allow, deny = _rules(rules)
    for rule in deny:
        if _matches(rule, address):
            return FilterVerdict(False, f"the sender filter refuses {address} (rule !{rule})")
    if not allow:
        return FilterVerdict(True)
    for rule in allow:
        if _matches(rule, address):
            return FilterVerdict(True, f"allowed by rule {rule}")
    who = address or "no sender"
    return FilterVerdict(False, f"{who} is not on the sender filter's allow list")


def _rules(text: str) -> tuple[list[str], list[str]]:
    allow, deny = [], []
    for line in text.splitlines():
        rule = line.strip().lower()
        if not rule or rule.startswith("#"):
            continue
        if rule.startswith("!"):
            deny.append(rule[1:].strip())
        else:
            allow.append(rule)
    return allow, [r for r in deny if r]


def _matches(rule: str, address: str) -> bool:
    if rule.startswith("@"):
        # "@example.com" is that domain and its subdomains.
        domain = address.rpartition("@")[2]
        return domain == rule[1:] or domain.endswith("." + rule[1:])
    if "*" in rule or "?" in rule:
        return fnmatch.fnmatchcase(address, rule)
    if "@" not in rule:  # a bare domain
        return address.rpartition("@")[2] == rule
    return address == rule


def channel_addresses(*, mailbox: Mailbox) -> set[str]:
    """The channel's address and its aliases, lower case."""
    addresses = {mailbox.email_address.lower()}
    addresses.update(a.lower() for a in mailbox.aliases.values_list("address", flat=True))
    return addresses
