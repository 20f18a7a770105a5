"""Agents sign in on the workspace's own page; the admin keeps its own."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.workspace.conftest import PASSWORD, person

pytestmark = pytest.mark.django_db


def test_an_agent_signs_in_and_lands_on_the_case_list(client):
    person("alice")

    response = client.post(
        reverse("cases:login"), {"username": "alice", "password": PASSWORD}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("cases:list")
    assert "Sign out" in response.text


def test_a_wrong_password_says_what_to_do(client):
    person("alice")

    response = client.post(reverse("cases:login"), {"username": "alice", "password": "nope"})

    assert "did not match" in response.text and "ask an administrator" in response.text


def test_signing_out_takes_a_post_and_returns_to_sign_in(client):
    client.force_login(person("alice"))

    response = client.post(reverse("cases:logout"))

    assert response["Location"] == reverse("cases:login")
    assert client.get(reverse("cases:list")).status_code == 302


def test_the_admin_still_signs_in_on_its_own_page(client):
    response = client.get("/admin/")

    assert response["Location"].startswith("/admin/login/")
