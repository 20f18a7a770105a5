"""The case page: the thread, each message shown safely, its files, its outbox state."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cases.models import Attachment, CaseMessage
from mailboxes.models import OutboundMessage
from tests.cases.conftest import case_of, mail
from tests.workspace.conftest import client_for, html_mail

pytestmark = pytest.mark.django_db

HOSTILE = (
    '<p>Hello</p><script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'
    '<form action="https://evil.example/"><input name="password"></form>'
    '<iframe src="https://evil.example/"></iframe>'
    '<p><img src="https://tracker.example/pixel.png" alt="pixel">'
    '<img src="cid:logo@example.org"></p>'
    "<div>On Monday, Support wrote:</div><blockquote>Your earlier question</blockquote>"
)


@pytest.fixture
def hostile_case(support, receive):
    row = receive(
        support,
        html_mail(HOSTILE, inline_png_cid="logo@example.org", attachment=("page.html", b"<h1>")),
    )
    return case_of(row)


def body_of(client, case, **params):
    message = case.messages.get(direction="in")
    return client.get(reverse("cases:message_body", args=[message.pk]), params)


def test_the_thread_lists_messages_in_order_with_why_they_joined_and_their_state(
    support, receive, agent
):
    case = case_of(receive(support, mail(subject="Kettle", body="First question")))

    page = client_for(agent).get(reverse("cases:detail", args=[case.pk])).text

    assert "First question" in page
    assert "Started the case" in page  # the customer's mail
    assert "Sent by Postroom" in page  # the acknowledgement after it
    assert page.index("Started the case") < page.index("Sent by Postroom")
    assert 'class="out-state queued"' in page


def test_the_message_html_has_no_script_handler_form_or_frame(hostile_case, agent):
    response = body_of(client_for(agent), hostile_case)
    body = response.text.split("<body>", 1)[1]

    assert "Hello" in body
    for banned in ("<script", "onerror", "<form", "<input", "<iframe", "pwned"):
        assert banned not in body
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp


def test_remote_images_load_only_when_asked(hostile_case, agent):
    client = client_for(agent)

    blocked = body_of(client, hostile_case)
    shown = body_of(client, hostile_case, images="1")

    assert "tracker.example" not in blocked.text
    assert "https:" not in blocked["Content-Security-Policy"]
    assert 'src="https://tracker.example/pixel.png"' in shown.text
    assert "https:" in shown["Content-Security-Policy"]
    page = client.get(reverse("cases:detail", args=[hostile_case.pk])).text
    assert "Show images" in page


def test_an_inline_image_points_at_its_file(hostile_case, agent):
    logo = Attachment.objects.get(message__case=hostile_case, content_id__contains="logo")

    body = body_of(client_for(agent), hostile_case).text

    assert f'src="{reverse("cases:attachment", args=[logo.pk])}"' in body


def test_quoted_history_is_folded_until_asked_for(hostile_case, agent):
    client = client_for(agent)

    short = body_of(client, hostile_case)
    full = body_of(client, hostile_case, full="1")

    assert "Your earlier question" not in short.text
    assert "On Monday, Support wrote:" not in short.text
    assert "Your earlier question" in full.text
    page = client.get(reverse("cases:detail", args=[hostile_case.pk])).text
    assert "Show full message" in page


def test_a_plain_text_reply_folds_its_quote(support, receive, agent):
    body = "Still broken.\n\nOn Mon, 23 Nov 2026, Support wrote:\n> Try descaling it.\n"
    case = case_of(receive(support, mail(body=body)))

    page = client_for(agent).get(reverse("cases:detail", args=[case.pk])).text

    short, full = page.split("Show full message", 1)
    assert "Still broken." in short and "Try descaling it." not in short
    assert "Try descaling it." in full


def test_files_download_as_attachments_never_shown_in_place(hostile_case, agent):
    page_file = Attachment.objects.get(message__case=hostile_case, filename="page.html")

    response = client_for(agent).get(reverse("cases:attachment", args=[page_file.pk]))

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="page.html"')
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == b"<h1>"


def test_a_file_not_kept_shows_why(support, receive, agent, settings):
    settings.POSTROOM_ATTACHMENT_MAX_BYTES = 10
    case = case_of(receive(support, mail(attachments=[("big.pdf", b"%PDF" + b"x" * 100)])))
    big = Attachment.objects.get(message__case=case)
    assert not big.kept

    page = client_for(agent).get(reverse("cases:detail", args=[case.pk])).text

    assert "big.pdf" in page and "not kept:" in page and big.not_kept_reason in page
    assert reverse("cases:attachment", args=[big.pk]) not in page


def test_the_states_endpoint_reports_outbox_progress(support, receive, agent):
    case = case_of(receive(support, mail()))
    ack = CaseMessage.objects.get(case=case, direction="out")
    client = client_for(agent)
    url = reverse("cases:states", args=[case.pk])

    before = client.get(url).json()["messages"][str(ack.pk)]
    OutboundMessage.objects.filter(pk=ack.outbound_id).update(state="sent")
    after = client.get(url).json()["messages"][str(ack.pk)]

    assert (before["state"], before["moving"]) == ("queued", True)
    assert (after["state"], after["label"], after["moving"]) == ("sent", "Sent", False)


def test_a_long_thread_takes_no_more_queries_than_a_short_one(support, receive, agent):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    case = case_of(receive(support, mail()))
    client = client_for(agent)
    url = reverse("cases:detail", args=[case.pk])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    short = queries()
    CaseMessage.objects.bulk_create(
        CaseMessage(case=case, direction="in", date=timezone.now(), joined_by="subject", text="x")
        for _ in range(30)
    )

    assert queries() == short


def test_the_case_history_lists_what_agents_did_and_why(support, receive, agent):
    from cases.models import CaseEvent

    case = case_of(receive(support, mail()))
    CaseEvent.objects.create(
        case=case, kind="state", actor=agent, detail="New → Pending", reason="Asked for a photo"
    )

    page = client_for(agent).get(reverse("cases:detail", args=[case.pk])).text

    assert "Status changed: New → Pending" in page
    assert "Asked for a photo" in page and "by alice" in page
