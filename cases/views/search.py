"""Full-text search over cases: subject and message text, one function for both engines."""

from __future__ import annotations

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from cases.models import Case, CaseMessage


def cases_search(cases: QuerySet[Case], *, query: str) -> QuerySet[Case]:
    """The cases whose subject or any message's text matches `query`.

    PostgreSQL uses its text search (stemmed words, "quoted phrases", -exclusions); elsewhere a
    case-insensitive substring match. An EXISTS subquery, not a join, so a case with many
    matching messages is listed once and the page's query count stays the same.
    """
    query = query.strip()
    if not query:
        return cases
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        words = SearchQuery(query, search_type="websearch")
        in_messages = CaseMessage.objects.annotate(found=SearchVector("text")).filter(
            case=OuterRef("pk"), found=words
        )
        cases = cases.annotate(subject_vector=SearchVector("subject"))
        in_subject = Q(subject_vector=words)
    else:
        in_messages = CaseMessage.objects.filter(case=OuterRef("pk"), text__icontains=query)
        in_subject = Q(subject__icontains=query)
    return cases.filter(in_subject | Exists(in_messages))
