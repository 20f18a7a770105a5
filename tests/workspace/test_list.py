"""The case list: what an agent sees, filters, search, pages, and a constant query count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseMessage, Contact
from tests.workspace.conftest import client_for, person

pytestmark = pytest.mark.django_db
LIST_QUERIES = 6  # session, user, channels, assignees, count, page


def cases_in(mailbox, count: int, **fields) -> list[Case]:
    """Many cases at once, each with a contact and a message, the way the bench builds them."""
    start = timezone.now() - timedelta(days=1)
    contacts = Contact.objects.bulk_create(
        Contact(address=f"customer{n}-{start.timestamp()}@example.org", name=f"Customer {n}")
        for n in range(count)
    )
    cases = Case.objects.bulk_create(
        Case(
            mailbox=mailbox,
            contact=contact,
            address=contact.address,
            last_message_at=start + timedelta(minutes=n),
            **{"subject": f"Question {n}", **fields},
        )
        for n, contact in enumerate(contacts)
    )
    CaseMessage.objects.bulk_create(
        CaseMessage(
            case=case,
            direction="in",
            date=case.last_message_at,
            joined_by="new",
            text=f"Body of question {n}",
        )
        for n, case in enumerate(cases)
    )
    return cases


def test_the_list_shows_status_channel_contact_subject_time_and_assignee(support, agent):
    cases_in(support, 1, assignee=agent, state=Case.State.OPEN)

    page = client_for(agent).get(reverse("cases:list")).text

    for shown in ("Open", support.name, "Customer 0", "Question 0", "alice"):
        assert shown in page


@pytest.mark.backends
@pytest.mark.parametrize("size", [3, 120])
def test_the_list_takes_the_same_queries_whatever_the_number_of_cases(
    size, support, agent, django_assert_max_num_queries
):
    cases_in(support, size, assignee=agent)
    client = client_for(agent)

    with django_assert_max_num_queries(LIST_QUERIES):
        response = client.get(reverse("cases:list"))

    assert response.status_code == 200
    assert response.text.count('class="case state-') == min(size, 50)


def test_filters_by_status_and_assignee(support, agent):
    colleague = person("carl", groups=support.agent_groups.all())
    cases_in(support, 1, assignee=agent, state=Case.State.OPEN, subject="Mine open")
    cases_in(support, 1, assignee=colleague, state=Case.State.PENDING, subject="Carl pending")
    cases_in(support, 1, subject="Nobody's new")
    client = client_for(agent)

    def subjects(**params) -> set[str]:
        page = client.get(reverse("cases:list"), params).text
        return {s for s in ("Mine open", "Carl pending", "Nobody&#x27;s new") if s in page}

    assert subjects(assignee="mine") == {"Mine open"}
    assert subjects(assignee="unassigned") == {"Nobody&#x27;s new"}
    assert subjects(assignee=colleague.pk) == {"Carl pending"}
    assert subjects(state="pending") == {"Carl pending"}
    assert subjects(channel=support.pk) == {"Mine open", "Carl pending", "Nobody&#x27;s new"}


@pytest.mark.backends  # full-text search is PostgreSQL's own
def test_search_finds_words_in_the_subject_or_any_message_text(support, agent):
    kettle, toaster = cases_in(support, 2)
    Case.objects.filter(pk=kettle.pk).update(subject="Kettle leaks")
    CaseMessage.objects.create(
        case=toaster,
        direction="in",
        date=timezone.now(),
        joined_by="subject",
        text="The TOASTER burns everything",
    )
    client = client_for(agent)

    by_subject = client.get(reverse("cases:list"), {"q": "kettle"}).text
    by_text = client.get(reverse("cases:list"), {"q": "toaster"}).text
    nothing = client.get(reverse("cases:list"), {"q": "fridge"}).text

    assert "Kettle leaks" in by_subject and "Question 1" not in by_subject
    assert "Question 1" in by_text and "Kettle leaks" not in by_text
    assert "No case matches these filters." in nothing


def test_pages_hold_fifty_cases_newest_message_first(support, agent):
    cases_in(support, 60)
    client = client_for(agent)

    first = client.get(reverse("cases:list")).text
    second = client.get(reverse("cases:list"), {"page": 2}).text

    assert "Page 1 of 2 (60 cases)" in first
    assert first.index("Question 59") < first.index("Question 58")
    assert "Question 0<" in second and "Question 59<" not in second
