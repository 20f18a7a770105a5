"""An agent reads new mail in Chromium: nothing in it runs, images wait, files download."""

from __future__ import annotations

import re

import pytest

from mailboxes.models import OutboundMessage
from tests.workspace.conftest import PASSWORD, PNG, html_mail

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, user) -> None:
    page.goto("/cases/")  # not signed in: sent to the agents' sign-in page
    page.wait_for_url(re.compile(r"/cases/login/\?next="))
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("table.cases")


def frame_global(page, name: str):
    """A global of the message frame, read from the page (the frame itself runs no script)."""
    return page.evaluate(f"document.querySelector('article.in iframe.body').contentWindow.{name}")


def test_an_agent_reads_a_hostile_mail_safely_and_downloads_its_file(
    page, support, agent, dovecot, poll, http_sink
):
    http_sink.respond(200, headers={"Content-Type": "image/png"}, body=PNG)
    hostile = (
        "<p>Hello, the kettle is broken.</p>"
        "<script>window.pwned = 'script'; parent.pwned = 'script'</script>"
        "<img src='x' onerror=\"window.pwned = 'onerror'; parent.pwned = 'onerror'\">"
        f"<p><img id='remote' src='{http_sink.url('/pixel.png')}' alt='logo'></p>"
    )
    sign_in(page, agent)
    assert "No cases yet" in page.inner_text("table.cases")

    dovecot.deliver(support.mail_user, html_mail(hostile, attachment=("invoice.pdf", b"%PDF-1")))
    poll(support)
    page.reload()
    page.click("text=Broken kettle")

    frame = page.frame_locator("article.in iframe.body")
    frame.locator("text=the kettle is broken").wait_for()
    assert page.evaluate("window.pwned") is None
    assert frame_global(page, "pwned") is None
    assert http_sink.requests == []  # the remote image waits for the agent

    page.click("article.in button[data-toggle=images]")
    frame.locator("img[alt=logo]").wait_for()
    assert http_sink.wait_for(1)
    assert http_sink.requests[0].path == "/pixel.png"
    assert page.evaluate("window.pwned") is None

    # The acknowledgement's state follows the outbox without a reload.
    assert page.inner_text("article.out .out-state") == "Queued"
    OutboundMessage.objects.filter(mailbox=support).update(state="sent")
    page.wait_for_selector("article.out .out-state.sent")
    assert page.inner_text("article.out .out-state") == "Sent"

    with page.expect_download() as download_info:
        page.click("a:has-text('invoice.pdf')")
    download = download_info.value
    assert download.suggested_filename == "invoice.pdf"
    with open(download.path(), "rb") as f:
        assert f.read() == b"%PDF-1"


def test_an_agent_of_another_group_cannot_open_the_case_by_url(page, support, receive, outsider):
    from tests.cases.conftest import case_of

    case = case_of(receive(support, html_mail("<p>Private</p>")))
    sign_in(page, outsider)

    response = page.goto(f"/cases/{case.pk}/")

    assert response.status == 404
    assert "Private" not in page.content()
