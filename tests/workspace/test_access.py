"""Agents see only their channels: every URL of another channel's case answers 404."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, reverse

from cases import urls as case_urls
from cases.models import Attachment, Case, CaseMessage, Task
from tests.workspace.conftest import client_for, html_mail

pytestmark = pytest.mark.django_db

SIGN_IN = {"login", "logout"}


def object_urls() -> list[URLPattern]:
    """Every workspace URL about one case, message or file, the actions' too."""
    return [
        p
        for p in case_urls.workspace
        if isinstance(p, URLPattern) and "<int:pk>" in str(p.pattern) and p.name not in SIGN_IN
    ]


def url_of(pattern: URLPattern, case: Case) -> str:
    route = str(pattern.pattern)
    if route.startswith("messages/"):
        pk = case.messages.filter(direction="in").first().pk
    elif route.startswith("attachments/"):
        pk = Attachment.objects.filter(message__case=case).first().pk
    elif route.startswith("tasks/"):
        pk = Task.objects.get_or_create(case=case, title="Call the customer back")[0].pk
    else:
        pk = case.pk
    return reverse(f"cases:{pattern.name}", args=[pk])


@pytest.fixture
def case(support, receive, case_of):  # noqa: F811
    row = receive(
        support,
        html_mail("<p>Hello <b>there</b></p>", attachment=("invoice.pdf", b"%PDF-1.4 x")),
    )
    return case_of(row)


@pytest.fixture
def case_of():
    from tests.cases.conftest import case_of

    return case_of


@pytest.mark.parametrize("pattern", object_urls(), ids=lambda p: p.name)
def test_an_outsider_gets_404_on_every_url_of_the_case(pattern, case, outsider, raw_reader):
    url = url_of(pattern, case)
    outsider.user_permissions.set(raw_reader.user_permissions.all())  # even with raw rights
    client = client_for(outsider)

    answers = {client.get(url).status_code, client.post(url).status_code}

    assert 404 in answers
    assert answers <= {404, 405}, (url, answers)  # 405: the method, whatever the case


@pytest.mark.parametrize("pattern", object_urls(), ids=lambda p: p.name)
def test_the_channels_agent_reaches_the_same_urls(pattern, case, raw_reader):
    url = url_of(pattern, case)
    client = client_for(raw_reader)

    answers = {client.get(url).status_code, client.post(url).status_code}

    assert 404 not in answers, (url, answers)


def test_an_outsider_does_not_find_the_case_in_the_list_or_by_search(case, outsider, agent):
    outsider_client, agent_client = client_for(outsider), client_for(agent)

    assert "Broken kettle" in agent_client.get(reverse("cases:list")).text
    assert "Broken kettle" in agent_client.get(reverse("cases:list"), {"q": "kettle"}).text
    assert "Broken kettle" not in outsider_client.get(reverse("cases:list")).text
    assert "Broken kettle" not in outsider_client.get(reverse("cases:list"), {"q": "kettle"}).text
    by_channel = outsider_client.get(reverse("cases:list"), {"channel": case.mailbox_id})
    assert by_channel.status_code == 404


def test_an_administrator_sees_every_channel(case, admin):
    client = client_for(admin)

    assert "Broken kettle" in client.get(reverse("cases:list")).text
    assert client.get(reverse("cases:detail", args=[case.pk])).status_code == 200


def test_other_cases_of_the_contact_show_only_the_agents_channels(
    case, support, channel, receive, agent
):
    other_channel = channel()
    hidden = receive(other_channel, html_mail("<p>x</p>", subject="Secret sales deal"))
    shown = receive(support, html_mail("<p>y</p>", subject="Second kettle"))
    assert CaseMessage.objects.filter(inbound__in=[hidden, shown]).count() == 2

    page = client_for(agent).get(reverse("cases:detail", args=[case.pk])).text

    assert "Second kettle" in page
    assert "Secret sales deal" not in page


def test_raw_mail_needs_its_own_permission(case, agent):
    message = case.messages.filter(direction="in").first()
    client = client_for(agent)

    assert client.get(reverse("cases:message_raw", args=[message.pk])).status_code == 403
    assert "view raw" not in client.get(reverse("cases:detail", args=[case.pk])).text


def test_raw_mail_downloads_as_plain_text_with_the_permission(case, raw_reader):
    message = case.messages.filter(direction="in").first()
    client = client_for(raw_reader)

    response = client.get(reverse("cases:message_raw", args=[message.pk]))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"Subject: Broken kettle" in response.content
    assert "view raw" in client.get(reverse("cases:detail", args=[case.pk])).text


def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in(case, client):
    response = client.get(reverse("cases:detail", args=[case.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("cases:login"))


def test_posts_without_the_csrf_token_are_refused(case, agent):
    client = client_for(agent, enforce_csrf_checks=True)
    posts = [reverse("cases:logout")]
    for pattern in object_urls():
        url = url_of(pattern, case)
        if client.post(url).status_code != 405:
            posts.append(url)

    refused = {url: client.post(url).status_code for url in posts}

    assert set(refused.values()) == {403}, refused
