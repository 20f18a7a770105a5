"""An administrator sets up a channel in Chromium, from sign-in to delete."""

from __future__ import annotations

import re

import pytest

from tests.mailboxes.conftest import SAMPLE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, django_user_model):
    django_user_model.objects.create_superuser("alice", "alice@example.test", "alice-pass-1")
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def test_an_administrator_connects_tests_aliases_offlines_and_deletes_a_channel(
    page, django_user_model, dovecot, mail_user, smtp
):
    smtp.add_user(mail_user.address, mail_user.password)
    for n in range(2):
        dovecot.deliver(mail_user, SAMPLE % n)
    sign_in(page, django_user_model)

    page.goto("/admin/mailboxes/mailbox/add/")
    # Fields that do not apply are hidden: SendGrid's token while SMTP is chosen.
    assert not page.locator("#id_sendgrid_api_token").is_visible()
    assert not page.locator("#id_oauth_client_id").is_visible()
    page.select_option("#id_server_type", "sendgrid")
    assert page.locator("#id_sendgrid_api_token").is_visible()
    page.select_option("#id_server_type", "smtp")

    page.fill("#id_name", "Support")
    page.fill("#id_email_address", mail_user.address)
    page.select_option("#id_protocol", "imap")
    page.fill("#id_incoming_host", "127.0.0.1")
    page.fill("#id_incoming_port", str(dovecot.ports.imaps))
    page.select_option("#id_incoming_security", "ssl")
    page.fill("#id_username", mail_user.name)
    page.fill("#id_password", mail_user.password)
    page.check("#id_trust_self_signed")
    page.fill("#id_smtp_host", "127.0.0.1")
    page.fill("#id_smtp_port", str(smtp.starttls_port))
    page.select_option("#id_smtp_security", "starttls")
    page.fill("#id_smtp_username", mail_user.address)
    page.fill("#id_aliases-0-address", "billing@example.test")
    page.fill("#id_aliases-0-display_name", "Billing")
    page.click("input[name=_continue]")

    page.wait_for_selector(".messagelist")
    assert "2 messages in INBOX" in page.inner_text(".messagelist")
    assert "Working" in page.inner_text(".field-status_badge")
    assert page.input_value("#id_aliases-0-address") == "billing@example.test"
    assert page.input_value("#id_password") == ""  # never rendered back
    assert "Set" in page.inner_text(".field-password")

    dovecot.deliver(mail_user, SAMPLE % 99)
    page.click("#test-connection")
    page.wait_for_selector(".messagelist")
    assert "3 messages in INBOX" in page.inner_text(".messagelist")

    page.goto("/admin/mailboxes/mailbox/")
    page.check("input[name=_selected_action]")
    page.select_option("select[name=action]", "take_offline")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    assert page.locator("td.field-enabled img[alt=False]").count() == 1

    page.click("text=Support")
    page.click("a.deletelink")
    confirmation = page.inner_text("#content")
    assert "Support" in confirmation and "1 alias" in confirmation
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert re.search(r"deleted successfully", page.inner_text(".messagelist"))
    assert page.locator("#result_list a", has_text="Support").count() == 0
