"""From stored bytes to the facts the pipeline decides on.

Real mail is often wrong: unknown charsets, dates no parser reads, headers missing or
malformed. Each fact degrades on its own (replacement characters, the arrival time, an empty
value) so one bad header never stops the message.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache

import nh3
from django.utils import timezone

from cases import mail_policy
from mailboxes.automatic import automatic_reason

MSGID = re.compile(r"<[^<>\s]+>")
PLAIN_ADDRESS = re.compile(r"^[^\s<>\"@]+@[^\s<>\"@]+$")
ADDRESS = re.compile(r"[^\s<>\"',;:()\[\]]+@[^\s<>\"',;:()\[\]]+")


class _ParsedOnce:
    """A header factory that parses each distinct header once. A parsed message keeps raw
    header text and parses it again on every read: reading a part's Content-Type, filename
    and disposition parsed the same headers some 50 times a message. Header objects are
    immutable and depend only on (name, value), so handing the same one back is exact."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._cached = lru_cache(maxsize=512)(factory)

    def __call__(self, name, value):
        if type(name) is str and type(value) is str:
            return self._cached(name, value)
        return self._factory(name, value)


POLICY = mail_policy.POLICY.clone(header_factory=_ParsedOnce(mail_policy.POLICY.header_factory))


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str = ""
    inline: bool = False  # an image the HTML shows, not a file the sender attached


@dataclass(frozen=True)
class ParsedMail:
    message: Message
    message_id: str
    in_reply_to: list[str]
    references: list[str]
    sender: str  # address, lower case; "" when there is none
    sender_name: str
    reply_to: str
    recipients: list[str]  # To and Cc
    subject: str
    date: datetime
    text: str
    html: str  # sanitised
    attachments: list[ParsedAttachment] = field(default_factory=list)
    automatic: str = ""  # why it looks machine-written, "" for a person
    bounce_of: list[str] = field(default_factory=list)  # Message-IDs a DSN reports on
    is_bounce: bool = False


def mail_parse(raw: bytes, *, arrived: datetime) -> ParsedMail:
    if not raw.strip():
        raise ValueError("the message is empty")
    message = email.message_from_bytes(raw, policy=POLICY)
    sender_name, sender = _first_address(message, "From")
    text, html, attachments, report = _bodies(message)
    return ParsedMail(
        message=message,
        message_id=next(iter(_msgids(message, "Message-ID")), ""),
        in_reply_to=_msgids(message, "In-Reply-To"),
        references=_msgids(message, "References"),
        sender=sender,
        sender_name=sender_name,
        reply_to=_first_address(message, "Reply-To")[1],
        recipients=_addresses(message, "To") + _addresses(message, "Cc"),
        subject=header_text(message, "Subject")[:500],
        date=_date(message, arrived),
        text=text,
        html=html_sanitise(html) if html else "",
        attachments=attachments,
        automatic=_automatic(message),
        bounce_of=_bounce_of(report) if report is not None else [],
        is_bounce=report is not None,
    )


def header_text(message: Message, name: str) -> str:
    """A header as one line of text; a malformed one degrades to its raw form."""
    try:
        value = message.get(name, "")
        return clean_text(" ".join(str(value).split()))
    except Exception:  # noqa: BLE001 - email's header parser raises many kinds on bad input
        return _raw_header(message, name)


def clean_text(value: str) -> str:
    """Text a database takes: undeclared 8-bit bytes (which email keeps as lone surrogates)
    decoded as UTF-8 with replacement, and no NUL (PostgreSQL refuses it in text)."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "\ufffd")


def _raw_header(message: Message, name: str) -> str:
    """The first such header as written, unparsed (so it cannot fail), ASCII only."""
    wanted = name.lower()
    raw = next((v for k, v in message.raw_items() if k.lower() == wanted), "")
    return " ".join(str(raw).encode("ascii", "replace").decode().split())


def _has(message: Message, name: str) -> bool:
    return name in message  # case-insensitive, and parses nothing


def _addresses(message: Message, name: str) -> list[str]:
    return [addr for _name, addr in _pairs(message, name)]


def _first_address(message: Message, name: str) -> tuple[str, str]:
    pairs = _pairs(message, name)
    return pairs[0] if pairs else ("", "")


def _pairs(message: Message, name: str) -> list[tuple[str, str]]:
    """(display name, lower-case address) pairs; a header the parser rejects is searched for
    anything shaped like an address instead."""
    try:
        header = message.get(name)
        if header is None:
            return []
        pairs = [(a.display_name, a.addr_spec) for a in header.addresses]
    except Exception:  # noqa: BLE001
        text = _raw_header(message, name)
        pairs = getaddresses([text]) or []
    pairs = [(clean_text(n or ""), clean_text(a or "").strip().lower()) for n, a in pairs]
    found = [(n[:200], a) for n, a in pairs if PLAIN_ADDRESS.match(a)]
    if found or not _has(message, name):
        return found
    return [("", a.lower()) for a in ADDRESS.findall(_raw_header(message, name))]


def _msgids(message: Message, name: str) -> list[str]:
    return MSGID.findall(_raw_header(message, name))[-50:]


def _date(message: Message, arrived: datetime) -> datetime:
    try:
        value = parsedate_to_datetime(_raw_header(message, "Date"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return arrived
    if value is None:
        return arrived
    if timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def _automatic(message: Message) -> str:
    try:
        return automatic_reason(message)
    except Exception:  # noqa: BLE001 - a malformed header reads as a person, not a crash
        return ""


# --- Bodies -------------------------------------------------------------------------------


def _bodies(message: Message) -> tuple[str, str, list[ParsedAttachment], Message | None]:
    text: list[str] = []
    html: list[str] = []
    attachments: list[ParsedAttachment] = []
    report = message if message.get_content_type() == "multipart/report" else None
    for part in _leaves(message):
        kind = part.get_content_type()
        if _is_attachment(part):
            attachments.append(_attachment(part))
        elif kind == "text/plain":
            text.append(part_text(part))
        elif kind == "text/html":
            html.append(part_text(part))
        elif kind in ("message/delivery-status", "message/rfc822", "text/rfc822-headers"):
            if report is None:
                attachments.append(_attachment(part))
        elif part.get_content_maintype() != "multipart":
            attachments.append(_attachment(part))
    plain = clean_text("\n\n".join(t for t in text if t.strip()))
    rich = clean_text("\n".join(html))
    if not plain and rich:
        plain = html_to_text(rich)
    return plain, rich, attachments, report


def _leaves(message: Message):
    """The parts to look at, without descending into attached messages (a forwarded mail's
    body is an attachment, not this message's text). In multipart/alternative only the
    plain and HTML versions count."""
    if not message.is_multipart():
        yield message
        return
    for part in message.get_payload():
        if not isinstance(part, Message):
            continue
        if part.get_content_type() == "message/rfc822" or not part.is_multipart():
            yield part
        else:
            yield from _leaves(part)


def _is_attachment(part: Message) -> bool:
    if _disposition(part) == "attachment":
        return True
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001
        filename = None
    return bool(filename) or (
        part.get_content_maintype() == "image" and bool(_raw_header(part, "Content-ID"))
    )


def _disposition(part: Message) -> str:
    try:
        return part.get_content_disposition() or ""
    except Exception:  # noqa: BLE001 - a malformed Content-Disposition reads as none
        return ""


def _attachment(part: Message) -> ParsedAttachment:
    try:
        filename = part.get_filename() or ""
    except Exception:  # noqa: BLE001
        filename = ""
    if part.get_content_type() == "message/rfc822":
        data = part.get_payload()[0].as_bytes() if part.get_payload() else b""
        filename = filename or "message.eml"
    else:
        data = _payload_bytes(part)
    content_id = MSGID.findall(_raw_header(part, "Content-ID"))
    return ParsedAttachment(
        inline=bool(content_id) and _disposition(part) != "attachment",
        filename=clean_text(" ".join(filename.split()))[:255] or "attachment",
        content_type=clean_text(part.get_content_type())[:255],
        data=data,
        content_id=content_id[0][1:-1] if content_id else "",
    )


def _payload_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""


def part_text(part: Message) -> str:
    """A text part decoded by its charset; unknown or wrong charsets decode with replacement."""
    try:
        if isinstance(part, EmailMessage):
            return part.get_content()
    except (LookupError, UnicodeError, AssertionError, KeyError, ValueError):
        pass
    charset = part.get_content_charset() or "utf-8"
    data = _payload_bytes(part)
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def html_sanitise(html: str) -> str:
    """HTML safe to show an agent: no scripts, styles, handlers or remote frames (nh3)."""
    # cid: stays so inline images can point at their attachment when shown (cases/rendering.py
    # sanitises again for display, with its own rules).
    schemes = nh3.ALLOWED_URL_SCHEMES | {"cid"}
    return nh3.clean(html, link_rel="noopener noreferrer nofollow", url_schemes=schemes)


def html_to_text(html: str) -> str:
    from html import unescape

    html = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>|</h\d>", "\n", html)
    text = unescape(nh3.clean(html, tags=set()))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _bounce_of(report: Message) -> list[str]:
    """Message-IDs of the message a delivery report (RFC 3464) is about."""
    for part in report.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if inner and isinstance(inner[0], Message):
                return _msgids(inner[0], "Message-ID")
        if part.get_content_type() == "text/rfc822-headers":
            headers = email.message_from_string(part_text(part), policy=POLICY)
            return _msgids(headers, "Message-ID")
    return []
