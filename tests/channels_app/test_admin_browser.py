"""An administrator signs in to the admin in a real browser."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_administrator_signs_in_and_sees_the_admin(page, django_user_model):
    django_user_model.objects.create_superuser("alice", "alice@example.test", "alice-pass-1")
    page.goto("/admin/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "Site administration" in page.content()
    assert "Periodic tasks" in page.content()  # beat's schedule is editable in the admin


def test_a_wrong_password_keeps_the_door_shut(page, django_user_model):
    django_user_model.objects.create_superuser("alice", "alice@example.test", "alice-pass-1")
    page.goto("/admin/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("input[type=submit]")
    assert page.locator(".errornote").is_visible()
