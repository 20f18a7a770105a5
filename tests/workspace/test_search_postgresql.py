"""Search on PostgreSQL: its text search, over the subject and every message's new text."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from cases.models import Case, CaseMessage
from tests.workspace.conftest import client_for
from tests.workspace.test_list import cases_in

pytestmark = [pytest.mark.django_db, pytest.mark.backends]


@pytest.fixture(autouse=True)
def on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("runs on PostgreSQL: `python -m tests.backends` (make test does)")


def test_words_match_in_any_form_and_phrases_and_exclusions_work(support, agent):
    leaking, burning, quoted = cases_in(support, 3)
    Case.objects.filter(pk=leaking.pk).update(subject="Kettles leaking everywhere")
    CaseMessage.objects.filter(case=burning).update(text="The toaster burned my bread")
    CaseMessage.objects.filter(case=quoted).update(text="The toaster works, the kettle leaks")
    client = client_for(agent)

    def found(query: str) -> set[int]:
        page = client.get(reverse("cases:list"), {"q": query}).text
        return {c.pk for c in (leaking, burning, quoted) if f"[#{c.pk}]" in page}

    assert found("kettle leak") == {leaking.pk, quoted.pk}  # stems: kettles, leaking, leaks
    assert found('"toaster burned"') == {burning.pk}
    assert found("toaster -kettle") == {burning.pk}
