"""Parsing degrades one fact at a time: bad mail still gives a sender, a subject and a text."""

from __future__ import annotations

from datetime import UTC, datetime

from cases.parse import mail_parse

ARRIVED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def parse(raw: bytes):
    return mail_parse(raw, arrived=ARRIVED)


def test_it_decodes_an_unknown_charset_with_replacement():
    parsed = parse(
        b"From: a@example.org\r\nSubject: x\r\nContent-Type: text/plain; charset=x-klingon\r\n"
        b"\r\nHello \xff\xfe world\r\n"
    )
    assert parsed.text.startswith("Hello ")
    assert "world" in parsed.text


def test_it_falls_back_to_the_arrival_time_for_a_date_nobody_reads():
    parsed = parse(b"From: a@example.org\r\nDate: the day after tomorrow\r\n\r\nhi\r\n")
    assert parsed.date == ARRIVED


def test_it_reads_a_message_without_any_headers():
    parsed = parse(b"\r\njust a body\r\n")
    assert (parsed.sender, parsed.subject, parsed.message_id) == ("", "", "")
    assert parsed.text.strip() == "just a body"
    assert parsed.date == ARRIVED


def test_it_finds_the_address_in_a_from_header_the_parser_rejects():
    parsed = parse(b'From: "Broken <carol@EXAMPLE.org>\r\nSubject: x\r\n\r\nhi\r\n')
    assert parsed.sender == "carol@example.org"


def test_it_sanitises_html_and_derives_the_text_from_it():
    parsed = parse(
        b"From: a@example.org\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p onclick="steal()">Hello<script>alert(1)</script></p><p>there</p>\r\n'
    )
    assert "script" not in parsed.html and "onclick" not in parsed.html
    assert "Hello" in parsed.html
    assert parsed.text.split() == ["Hello", "there"]


def test_a_forwarded_message_is_an_attachment_not_the_body():
    inner = b"From: x@example.net\r\nSubject: inner\r\n\r\nthe inner text\r\n"
    raw = (
        b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--b--\r\n"
    )
    parsed = parse(raw)
    assert parsed.text.strip() == "see below"
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


def test_a_delivery_report_names_the_message_it_is_about():
    raw = (
        b"From: MAILER-DAEMON@example.net\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nIt did not go.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <sent-1@postroom.test>\r\nSubject: Re: x\r\n--b--\r\n"
    )
    parsed = parse(raw)
    assert parsed.is_bounce
    assert parsed.bounce_of == ["<sent-1@postroom.test>"]
    assert parsed.automatic


def test_it_lists_threading_headers_in_order():
    parsed = parse(
        b"From: a@example.org\r\nMessage-ID: <m3@x>\r\nIn-Reply-To: <m2@x>\r\n"
        b"References: <m1@x>\r\n <m2@x>\r\n\r\nhi\r\n"
    )
    assert (parsed.message_id, parsed.in_reply_to, parsed.references) == (
        "<m3@x>",
        ["<m2@x>"],
        ["<m1@x>", "<m2@x>"],
    )


def test_undeclared_8bit_headers_become_text_a_database_takes():
    parsed = parse(b"From: J\xfcrgen <j@example.org>\r\nSubject: Gr\xfc\xdfe\r\n\r\nhi\x00\r\n")
    for value in (parsed.sender_name, parsed.subject, parsed.text):
        value.encode("utf-8")  # no lone surrogates left
    assert "\x00" not in parsed.text
    assert parsed.sender == "j@example.org"
