"""Is this mail written by a machine? (RFC 3834 and the conventions that came before it.)

Used to count automatic mail in a folder preview, and never to answer a machine with a
machine (acknowledgements, confirmations).
"""

from __future__ import annotations

import re
from email.message import Message

MACHINE_SENDERS = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+\-.][^@]*)?@", re.I
)
BULK_PRECEDENCE = {"bulk", "junk", "list"}


def automatic_reason(headers: Message) -> str:
    """Why this message looks automatic, or "" when it looks written by a person."""
    auto_submitted = str(headers.get("Auto-Submitted", "")).strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    precedence = str(headers.get("Precedence", "")).strip().lower()
    if precedence in BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    if headers.get("List-Id") or headers.get("List-Unsubscribe"):
        return "mailing list (List-Id)"
    if headers.get("X-Autoreply") or headers.get("X-Autorespond"):
        return "auto-reply header"
    sender = _address(str(headers.get("Return-Path", ""))) or _address(str(headers.get("From", "")))
    if MACHINE_SENDERS.match(sender) or str(headers.get("Return-Path", "")).strip() == "<>":
        return f"machine sender ({sender or 'empty return path'})"
    return ""


def _address(value: str) -> str:
    match = re.search(r"[^\s<>\"',;]+@[^\s<>\"',;]+", value)
    return match.group(0).lower() if match else ""
