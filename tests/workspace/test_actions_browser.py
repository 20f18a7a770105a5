"""An agent answers a case from an alias in Chromium and watches the reply go out; the
customer's answer to it comes back into the same case, for that channel's agents only."""

from __future__ import annotations

import threading
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from html import escape

import pytest
from django.db import connection
from playwright.sync_api import expect

from cases.models import CaseMessage
from mailboxes.models import Alias, Mailbox
from mailboxes.signals import send_requested
from pollers.apps import enqueue_send
from pollers.outbox import outbox_send_due
from tests.cases.conftest import case_of, mail
from tests.workspace.test_workspace_browser import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ANSWER = "Thank you, the second payment is back in my account."


@pytest.fixture
def worker_stopped():
    """No worker picks the send up on commit: the test plays the worker, so the page is seen
    with the reply still queued first."""
    send_requested.disconnect(dispatch_uid="pollers.enqueue_send")
    yield
    send_requested.connect(enqueue_send, dispatch_uid="pollers.enqueue_send")


def worker_run(mailbox_id: int) -> None:
    """Send as a worker would, on a thread of its own: the SMTP session runs an event loop,
    and Playwright's is running in this one."""

    def run() -> None:
        try:
            outbox_send_due(mailbox_id=mailbox_id)
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=60)


def customer_answer(sent: EmailMessage) -> bytes:
    """The customer's answer to the agent's mail, as a mail client writes it: threaded to its
    Message-ID, new text above "On … wrote:" and the mail quoted, in text and in HTML."""
    quoted = sent.get_body(("plain",)).get_content().strip()
    attribution = f"On {sent['Date']}, {sent['From']} wrote:"
    text = "\n".join([ANSWER, "", attribution, *(f"> {line}" for line in quoted.splitlines())])
    html = (
        f"<div>{ANSWER}</div><br><div>{escape(attribution)}</div>"
        f'<blockquote type="cite">{escape(quoted).replace(chr(10), "<br>")}</blockquote>'
    )
    threaded = {"In-Reply-To": sent["Message-ID"], "References": sent["Message-ID"]}
    raw = mail(subject=f"Re: {sent['Subject']}", to=str(sent["From"]), body=text, headers=threaded)
    message = message_from_bytes(raw, policy=default)
    message.add_alternative(html, subtype="html")
    return message.as_bytes()


def test_the_agent_replies_from_an_alias_and_the_customers_answer_joins_the_case(
    page, chromium, live_server, support, agent, outsider, receive, smtp, worker_stopped
):
    smtp.add_user(support.username, support.password)
    Mailbox.objects.filter(pk=support.pk).update(
        smtp_port=smtp.starttls_port,
        smtp_security="starttls",
        auto_ack_template="",
        case_response_template="Hello {{ contact.name }},\n\n{{ reply }}\n\nThe support team",
    )
    Alias.objects.create(mailbox=support, address="billing@example.test", display_name="Billing")
    case = case_of(receive(support, mail(subject="Invoice wrong", body="I paid twice.")))
    sign_in(page, agent)

    page.click("text=Invoice wrong")
    text = page.locator("#reply textarea[name=text]")
    assert text.input_value().startswith("Hello Carol Customer,")
    assert text.input_value().endswith("The support team")
    page.select_option("#reply select[name=from_address]", "billing@example.test")
    text.fill("Hello Carol Customer,\n\nWe have refunded the second payment.\n\nThe support team")
    page.set_input_files(
        "#reply input[type=file]",
        files=[{"name": "refund.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 refund"}],
    )
    page.click("#reply button[type=submit]")

    page.wait_for_selector(".notices >> text=Reply queued to carol@example.org.")
    reply = CaseMessage.objects.get(case=case, direction=CaseMessage.Direction.OUT)
    badge = page.locator(f"#message-{reply.pk} [data-state]")
    assert badge.inner_text() == "Queued"
    assert "refund.pdf" in page.inner_text(f"#message-{reply.pk}")

    worker_run(support.pk)

    expect(badge).to_have_text("Sent")  # the page polls the states while any is moving
    [sent] = smtp.messages
    assert str(sent.message["From"]) == "Billing <billing@example.test>"
    assert "We have refunded the second payment." in sent.message.get_body(("plain",)).get_content()

    answer = receive(support, customer_answer(sent.message))
    assert case_of(answer) == case
    page.reload()
    answered = CaseMessage.objects.get(inbound=answer)
    joined = page.inner_text(f"#message-{answered.pk} .joined")
    assert joined == f"In-Reply-To header: {sent.message['Message-ID']}"
    frame = page.frame_locator(f"#message-{answered.pk} iframe.body")
    frame.locator(f"text={ANSWER}").wait_for()
    assert "refunded" not in frame.locator("body").inner_text()  # the quoted history is folded
    page.click(f"#message-{answered.pk} button[data-toggle=full]")
    frame.locator("text=We have refunded the second payment.").wait_for()

    other = chromium.new_context(base_url=live_server.url)
    try:
        elsewhere = other.new_page()
        sign_in(elsewhere, outsider)
        response = elsewhere.goto(f"/cases/{case.pk}/")
        assert response.status == 404
        assert "Not Found" in elsewhere.content()
        assert "refund" not in elsewhere.content()
    finally:
        other.close()
