"""A message's HTML made safe to show an agent, sanitised again at render time (nh3).

The stored HTML was cleaned when the mail was parsed; it is cleaned here once more, with
this page's own rules, so a change of rules applies to old mail too: no scripts, event
handlers, forms, frames or styles; links open outside the page; remote images are dropped
until the agent asks for them; `cid:` images point at the attachment's download URL. The
page then shows the result in a sandboxed frame under a strict Content-Security-Policy
(cases/views/messages.py), so a bug here still runs no script.

Quoted history is folded by cutting it out of the tree before sanitising: blockquotes (Gmail,
Apple Mail, Thunderbird), the "On … wrote:" line above them, and everything from Outlook's
"-----Original Message-----" or "From: … Sent: …" header on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser

import nh3

from cases.quoting import ATTRIBUTION, OUTLOOK_FROM, SEPARATORS

TAGS = nh3.ALLOWED_TAGS - {"map", "area"}
URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}
LINK_SCHEMES = ("http:", "https:", "mailto:", "tel:")
VOID = {"area", "br", "col", "hr", "img", "wbr", "input", "meta", "link", "source", "embed"}
OUTLOOK_SENT = re.compile(r"\b(Sent|Date|Gesendet|Envoyé)\s*:", re.I)
BLOCKS = {"p", "div", "li", "td", "th", "tr", "table", "pre", "h1", "h2", "h3", "h4", "h5", "h6"}


@dataclass
class Rendered:
    html: str
    remote_images: bool  # the message has remote images (shown or not)
    folded: bool  # quoted history was left out


def message_html_render(
    html: str,
    *,
    cid_url: Callable[[str], str | None],
    show_images: bool = False,
    full: bool = False,
) -> Rendered:
    """`cid_url(content_id)` gives the download URL of an inline image, or None."""
    folded = False
    if not full:
        short = html_fold_quotes(html)
        if short != html and _has_text(short):
            html, folded = short, True
    found = {"remote": False}

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if tag == "img" and attr == "src":
            return _image_src(value, cid_url, show_images, found)
        if tag == "a" and attr == "href":
            return value if value.lower().startswith(LINK_SCHEMES) else None
        return value

    clean = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style", "template"},
        url_schemes=URL_SCHEMES,
        attribute_filter=attribute_filter,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return Rendered(html=clean, remote_images=found["remote"], folded=folded)


def _image_src(value, cid_url, show_images, found) -> str | None:
    lowered = value.strip().lower()
    if lowered.startswith("cid:"):
        return cid_url(value.strip()[4:].strip("<>"))
    if lowered.startswith(("http:", "https:")):
        found["remote"] = True  # a tracking pixel tells the sender the mail was read
        return value if show_images else None
    return None  # relative addresses would reach this site with the agent's session


# --- Folding quoted history -----------------------------------------------------------------


@dataclass
class Node:
    tag: str  # "" for text
    attrs: list[tuple[str, str | None]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def plain(self) -> str:
        if self.tag == "br":
            return "\n"
        return self.text if not self.tag else "".join(c.plain() for c in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root")
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs)
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, attrs))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(Node("", text=data))


def html_fold_quotes(html: str) -> str:
    """The HTML without its quoted history (the same HTML when none is found)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    root = builder.root
    _cut_from_separator(root)
    _drop_blockquotes(root)
    return _serialise(root)


def _drop_blockquotes(node: Node) -> None:
    kept: list[Node] = []
    for child in node.children:
        if child.tag == "blockquote":
            _drop_attribution(kept)
            continue
        _drop_blockquotes(child)
        kept.append(child)
    node.children = kept


def _drop_attribution(kept: list[Node]) -> None:
    """Remove the "On … wrote:" line (and blank nodes) just above a dropped quote."""
    while kept and not kept[-1].plain().strip() and kept[-1].tag in ("", "br"):
        kept.pop()
    if kept and any(p.match(kept[-1].plain().strip()) for p in ATTRIBUTION):
        kept.pop()


def _cut_from_separator(node: Node) -> bool:
    """Drop everything from the first Outlook-style separator block on; True once cut."""
    for i, child in enumerate(node.children):
        if child.tag in (*BLOCKS, "") and _is_separator(child.plain().strip()):
            del node.children[i:]
            return True
        if child.tag and _cut_from_separator(child):
            del node.children[i + 1 :]
            return True
    return False


def _is_separator(text: str) -> bool:
    first_line = text.split("\n", 1)[0]
    if any(p.match(first_line) for p in SEPARATORS):
        return True
    # Outlook's header block: "From: …" with "Sent: …" in the same block.
    return bool(OUTLOOK_FROM.match(text) and OUTLOOK_SENT.search(text))


def _serialise(node: Node) -> str:
    if not node.tag:
        return escape(node.text, quote=False)
    inner = "".join(_serialise(c) for c in node.children)
    if node.tag == "#root":
        return inner
    attrs = "".join(f' {name}="{escape(value or "", quote=True)}"' for name, value in node.attrs)
    if node.tag in VOID:
        return f"<{node.tag}{attrs}>"
    return f"<{node.tag}{attrs}>{inner}</{node.tag}>"


def _has_text(html: str) -> bool:
    return bool(re.sub(r"\s+", "", nh3.clean(html, tags={"img"})))
