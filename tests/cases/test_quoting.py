"""Quoted history is cut at Postroom's marker, or at the quote header a client wrote."""

from __future__ import annotations

import pytest

from cases.quoting import text_strip_quoted

MARKER = "##- Please type your reply above this line -##"

CASES = [
    (
        "marker, quoted, with a wrapped Gmail attribution",
        "Thanks, that works.\n\nOn Mon, 23 Nov 2026 at 10:00, Support <help@example.test>\n"
        f"wrote:\n\n> {MARKER}\n>\n> We are sending a new one.\n",
        "Thanks, that works.",
    ),
    (
        "marker, not quoted (Outlook puts history below without >)",
        f"Fine by me.\n\n{MARKER}\n\nWe are sending a new one.\n",
        "Fine by me.",
    ),
    (
        "Thunderbird attribution without marker",
        "Yes please.\n\nOn 23.11.26 10:00, Support wrote:\n> Shall we send one?\n",
        "Yes please.",
    ),
    (
        "Outlook original message",
        "Received, thanks.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\nHi\n",
        "Received, thanks.",
    ),
    (
        "Outlook header block",
        "Got it.\n\n________________________________\nFrom: Support <help@example.test>\n"
        "Sent: Monday, 23 November 2026 10:00\nTo: Carol\nSubject: Kettle\n\nHi Carol\n",
        "Got it.",
    ),
    (
        "Outlook header block without the rule",
        "Got it.\n\nFrom: Support <help@example.test>\nSent: Monday\nSubject: Kettle\n\nHi\n",
        "Got it.",
    ),
    ("nothing quoted", "Just a question.\nOn second thought, two.", None),
    ("only a quote: kept whole", "> all of it\n> quoted\n", None),
    (
        "trailing quote",
        "My answer.\n\n> the question\n> more of it\n",
        "My answer.",
    ),
    ("inline answers are kept", "> question one\nanswer one\n> question two\nanswer two", None),
]


@pytest.mark.parametrize(("story", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_it_keeps_only_the_new_text(story, text, expected):
    assert text_strip_quoted(text, marker=MARKER) == (expected or text.strip())
