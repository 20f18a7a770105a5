"""Cutting quoted history from a reply, so a case reads as a conversation.

First choice is the end-of-message marker Postroom puts at the top of its own mail (seed 001):
everything from the line that carries it, quoted or not, is history. Without it, the quote
headers common clients write ("On … wrote:", Outlook's "-----Original Message-----" or
"From: … Sent: …" block) start the history. The full text is always kept beside the result.
"""

from __future__ import annotations

import re

QUOTE_PREFIX = re.compile(r"^[\s>]*")
ATTRIBUTION = [
    re.compile(r"^\s*On\b.{0,300}\bwrote:\s*$", re.I | re.S),  # Gmail, Apple Mail, Thunderbird
    re.compile(r"^\s*Le\b.{0,300}\ba écrit\s*:\s*$", re.I | re.S),
    re.compile(r"^\s*Am\b.{0,300}\bschrieb\b.{0,200}:\s*$", re.I | re.S),
    re.compile(r"^\s*El\b.{0,300}\bescribió:\s*$", re.I | re.S),
]
SEPARATORS = [
    re.compile(r"^\s*-{2,}\s*Original Message\s*-{2,}\s*$", re.I),
    re.compile(r"^\s*-{2,}\s*Forwarded message\s*-{2,}\s*$", re.I),
    re.compile(r"^\s*_{10,}\s*$"),  # Outlook's rule above its header block
]
OUTLOOK_FROM = re.compile(r"^\s*\*?(From|Von|De)\s*:\*?\s+\S", re.I)
OUTLOOK_NEXT = re.compile(r"^\s*\*?(Sent|Date|Gesendet|Envoyé)\s*:\*?\s+\S", re.I)


def text_strip_quoted(text: str, *, marker: str = "") -> str:
    """The new part of a reply. Falls back to the whole text when nothing would be left."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _marker_line(lines, marker)
    if cut is None:
        cut = _quote_header_line(lines)
    if cut is None:
        cut = _trailing_quote(lines)
    if cut is None:
        return text.strip()
    kept = "\n".join(lines[:cut]).rstrip()
    return kept or text.strip()


def _marker_line(lines: list[str], marker: str) -> int | None:
    marker = " ".join(marker.split())
    if not marker:
        return None
    for i, line in enumerate(lines):
        if marker in " ".join(QUOTE_PREFIX.sub("", line).split()):
            return _before_attribution(lines, i)
    return None


def _before_attribution(lines: list[str], cut: int) -> int:
    """Move the cut above the "On … wrote:" line (and blank lines) a client put before the
    quote, which may wrap onto a second line."""
    i = cut
    while i > 0 and not lines[i - 1].strip(" >"):
        i -= 1
    for span in (1, 2):
        start = i - span
        if start >= 0 and _is_attribution(lines[start:i]):
            return start
    return i


def _is_attribution(lines: list[str]) -> bool:
    joined = " ".join(QUOTE_PREFIX.sub("", line).strip() for line in lines)
    return any(pattern.match(joined) for pattern in ATTRIBUTION)


def _quote_header_line(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if line.startswith(">"):
            continue
        if any(p.match(line) for p in SEPARATORS):
            return i
        if OUTLOOK_FROM.match(line) and any(OUTLOOK_NEXT.match(n) for n in lines[i + 1 : i + 4]):
            return i
        for span in (1, 2):
            if _is_attribution(lines[i : i + span]) and _quoted_after(lines, i + span):
                return i
    return None


def _quoted_after(lines: list[str], start: int) -> bool:
    """An attribution line counts only when a quote follows it (or nothing does)."""
    rest = [line for line in lines[start:] if line.strip()]
    return not rest or rest[0].startswith(">")


def _trailing_quote(lines: list[str]) -> int | None:
    """A reply whose last lines all start with ">" ends with history."""
    end = len(lines)
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    start = end
    while start > 0 and (lines[start - 1].startswith(">") or not lines[start - 1].strip()):
        start -= 1
    if start == end or start == 0:
        return None
    return start
