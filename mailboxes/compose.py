"""Building the message Postroom sends: From, threading headers, marker, template, parts.

Every header value that comes from a user (subject, names, addresses) goes through
`_one_line` or address validation, so CR/LF can never start a header of its own.
"""

from __future__ import annotations

import email.policy
import logging
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.template import Context, Template, TemplateSyntaxError
from django.utils import timezone
from django.utils.html import escape, linebreaks

from mailboxes.models import Alias, Mailbox

logger = logging.getLogger(__name__)
TEMPLATE_CHANNEL_FIELDS = ("name", "email_address", "from_name", "reply_to", "channel_id")
# 7-bit bodies (quoted-printable or base64 where needed): Postroom does not ask for 8BITMIME
# (RFC 6152), and a server without it may mangle 8-bit text.
POLICY = email.policy.SMTP.clone(cte_type="7bit")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
MAX_REFERENCES = 20  # RFC 5322 3.6.4 allows trimming; long chains bloat every reply


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str
    data: bytes
    content_type: str = ""  # guessed from the file name when empty


@dataclass(frozen=True)
class Draft:
    """What a reply, acknowledgement or notification says, before it becomes MIME."""

    to: Sequence[str]
    subject: str
    text: str
    cc: Sequence[str] = ()
    alias: Alias | None = None
    in_reply_to: str = ""
    references: Sequence[str] = ()
    case_reference: str = ""  # "1234" → "[#1234]" in the subject
    attachments: Sequence[OutgoingAttachment] = ()
    automatic: bool = False  # acknowledgements, refusals: RFC 3834 headers
    use_template: bool = True  # wrap in the channel's case response template
    template_context: Mapping = field(default_factory=dict)


def message_compose(*, mailbox: Mailbox, draft: Draft) -> EmailMessage:
    message = EmailMessage(policy=POLICY)
    message["From"] = _sender(mailbox, draft.alias)
    message["To"] = [_address(a) for a in draft.to]
    if draft.cc:
        message["Cc"] = [_address(a) for a in draft.cc]
    if mailbox.reply_to:
        message["Reply-To"] = _address(mailbox.reply_to)
    message["Subject"] = _subject(draft.subject, draft.case_reference)
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(domain=message_id_domain())
    _thread(message, draft)
    if draft.automatic:
        message["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-reply loops
        message["X-Auto-Response-Suppress"] = "All"  # Exchange's equivalent
    text = _body_text(mailbox, draft)
    message.set_content(text)
    message.add_alternative(_body_html(text), subtype="html")
    for attachment in draft.attachments:
        _attach(message, attachment)
    return message


def message_id_domain() -> str:
    return settings.POSTROOM_MESSAGE_ID_DOMAIN


def recipients_of(message: EmailMessage) -> list[str]:
    return [a.addr_spec for name in ("To", "Cc", "Bcc") for a in _addresses(message, name)]


def _addresses(message: EmailMessage, name: str):
    header = message.get(name)
    return header.addresses if header is not None else ()


def _sender(mailbox: Mailbox, alias: Alias | None) -> Address:
    if alias is not None:
        return _address(alias.address, alias.display_name or mailbox.from_name)
    return _address(mailbox.email_address, mailbox.from_name)


def _address(addr: str, name: str = "") -> Address:
    addr = addr.strip()
    try:
        if CONTROL_CHARS.search(addr):
            raise ValidationError("control characters")
        validate_email(addr)
    except ValidationError:
        raise ValueError(f"Not a valid email address: {addr!r}") from None
    local, _, domain = addr.rpartition("@")
    return Address(display_name=_one_line(name), username=local, domain=domain)


def _one_line(value: str) -> str:
    """Header text from a user: line breaks and control characters become one space."""
    return " ".join(CONTROL_CHARS.sub(" ", value).split())


def _subject(subject: str, case_reference: str) -> str:
    subject = _one_line(subject)
    tag = f"[#{_one_line(case_reference)}]" if case_reference else ""
    if tag and tag not in subject:
        subject = f"{subject} {tag}".strip()
    return subject


def _thread(message: EmailMessage, draft: Draft) -> None:
    """In-Reply-To and References (RFC 5322 3.6.4), so the reply threads back to its case."""
    msgids = [m for m in (_msgid(r) for r in draft.references) if m]
    parent = _msgid(draft.in_reply_to)
    if parent:
        message["In-Reply-To"] = parent
        if parent not in msgids:
            msgids.append(parent)
    if msgids:
        message["References"] = " ".join(msgids[-MAX_REFERENCES:])


def _msgid(value: str) -> str:
    match = re.search(r"<[^<>\s]+>", _one_line(value or ""))
    return match.group(0) if match else ""


def _body_text(mailbox: Mailbox, draft: Draft) -> str:
    text = draft.text
    if draft.use_template and mailbox.case_response_template.strip():
        text = template_render(mailbox=mailbox, draft=draft)
    if mailbox.end_of_message_marker:
        # Seed 001: the marker leads the message, so a reply typed above it is cut cleanly.
        text = f"{mailbox.end_of_message_marker}\n\n{text}"
    return text.rstrip() + "\n"


def template_render(*, mailbox: Mailbox, draft: Draft) -> str:
    """The case response template (seed 001) around the reply.

    Documented variables: {{ reply }}, {{ channel.name }}, {{ channel.email_address }},
    {{ channel.from_name }}, {{ channel.reply_to }}, {{ channel.channel_id }}, and what the
    caller adds ({{ case }}, {{ contact }}, {{ agent }}). `channel` is a plain dict, never the
    model: a template must not be able to reach the channel's passwords.
    """
    channel = {name: getattr(mailbox, name) for name in TEMPLATE_CHANNEL_FIELDS}
    context = {"reply": draft.text, "channel": channel, **draft.template_context}
    template = template_compile(mailbox.case_response_template)
    if template is None:
        # The form refuses such a template; one stored before that still sends the reply.
        logger.warning("channel %s: case response template does not compile", mailbox.channel_id)
        return draft.text
    return template.render(Context(context, autoescape=False))


@lru_cache(maxsize=256)
def template_compile(source: str) -> Template | None:
    """A channel's template compiled once per process, or None when it does not compile.
    Keyed by the text itself, so an administrator's edit is a new entry, never a stale one."""
    try:
        return Template(source)
    except TemplateSyntaxError:
        return None


def _body_html(text: str) -> str:
    paragraphs = linebreaks(escape(text.rstrip()))
    return f'<!doctype html><html><body><div dir="auto">{paragraphs}</div></body></html>'


def _attach(message: EmailMessage, attachment: OutgoingAttachment) -> None:
    content_type = (
        attachment.content_type
        or mimetypes.guess_type(attachment.filename)[0]
        or "application/octet-stream"
    )
    maintype, _, subtype = content_type.partition("/")
    message.add_attachment(
        attachment.data,
        maintype=maintype,
        subtype=subtype or "octet-stream",
        filename=_one_line(attachment.filename) or "attachment",
    )
