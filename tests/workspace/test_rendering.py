"""Message HTML as the agent sees it: table-driven, through cases.rendering alone."""

from __future__ import annotations

import pytest

from cases.rendering import html_fold_quotes, message_html_render

FILES = {"logo@example.org": "/cases/attachments/7/"}


def render(html: str, **options) -> str:
    return message_html_render(html, cid_url=FILES.get, **options).html


@pytest.mark.parametrize(
    ("html", "absent"),
    [
        ("<script>alert(1)</script>ok", "alert"),
        ('<img src="x" onerror="alert(1)">', "onerror"),
        ('<a href="javascript:alert(1)">x</a>', "javascript"),
        ('<form action="/cases/"><button>Go</button></form>', "<form"),
        ('<iframe src="https://evil.example/"></iframe>', "iframe"),
        ('<p style="background:url(https://evil.example/x)">x</p>', "evil"),
        ("<style>p{background:url(https://evil.example/x)}</style>", "evil"),
        ("<svg><script>alert(1)</script></svg>", "alert"),
        ('<img src="/cases/logout/">', "logout"),
        ('<a href="/cases/1/merge/">x</a>', "merge"),
    ],
)
def test_nothing_active_survives(html, absent):
    assert absent not in render(html, full=True, show_images=True)


def test_inline_images_point_at_their_file_and_unknown_ones_are_dropped():
    html = '<img src="cid:logo@example.org"><img src="cid:gone@example.org">'

    assert render(html) == '<img src="/cases/attachments/7/"><img>'


def test_remote_images_are_dropped_until_shown_and_reported_either_way():
    html = '<img src="https://cdn.example/a.png" alt="a">'

    blocked = message_html_render(html, cid_url=FILES.get)
    shown = message_html_render(html, cid_url=FILES.get, show_images=True)

    assert "cdn.example" not in blocked.html and blocked.remote_images
    assert 'src="https://cdn.example/a.png"' in shown.html and shown.remote_images


def test_links_open_outside_the_page_without_a_referrer():
    html = render('<a href="https://shop.example/order">order</a>')

    assert 'target="_blank"' in html and "noreferrer" in html


@pytest.mark.parametrize(
    ("html", "kept", "folded"),
    [
        (  # Gmail
            '<div>Thanks!</div><div class="gmail_quote"><div>On Mon, 23 Nov 2026, Support '
            "&lt;s@example.test&gt; wrote:<br></div><blockquote>Old text</blockquote></div>",
            "Thanks!",
            "Old text",
        ),
        (  # Apple Mail / Thunderbird
            "<p>Works now</p><p>On 23 Nov 2026, at 10:00, Support wrote:</p>"
            '<blockquote type="cite">Old text</blockquote>',
            "Works now",
            "wrote:",
        ),
        (  # Outlook
            "<p>See below</p><hr><p><b>From:</b> Support<br><b>Sent:</b> Monday</p><p>Old text</p>",
            "See below",
            "Old text",
        ),
        (
            "<p>Hi</p><div>-----Original Message-----<br>From: Support</div><p>Old text</p>",
            "Hi",
            "Old text",
        ),
    ],
)
def test_quoted_history_is_folded(html, kept, folded):
    short = message_html_render(html, cid_url=FILES.get)
    full = message_html_render(html, cid_url=FILES.get, full=True)

    assert kept in short.html and folded not in short.html and short.folded
    assert folded in full.html and not full.folded


def test_a_message_that_is_only_a_quote_is_shown_whole():
    only_quote = "<blockquote>Forwarded words</blockquote>"

    rendered = message_html_render(only_quote, cid_url=FILES.get)

    assert "Forwarded words" in rendered.html and not rendered.folded


def test_a_line_that_merely_starts_with_from_is_not_a_quote():
    html = "<p>From: my side it works.</p><p>Sent from my phone</p>"

    assert html_fold_quotes(html) == html
