"""Full-text search over cases: subject and message text, one function for both engines."""

from __future__ import annotations

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from cases.models import Case, CaseMessage

# Named, not the server's default_text_search_config: the GIN indexes of migration
# 0005_search_indexes are on to_tsvector('english', …), and only the same expression uses them.
SEARCH_CONFIG = "english"


def cases_search(cases: QuerySet[Case], *, query: str) -> QuerySet[Case]:
    """The cases whose subject or any message's text matches `query`.

    PostgreSQL uses its text search (stemmed words, "quoted phrases", -exclusions) through GIN
    indexes: the matching cases and messages are found in the indexes first (`pk IN …`, which
    it hashes once), so neither the count nor the page runs to_tsvector over every row.
    Elsewhere a case-insensitive substring match. Either way a case with many matching
    messages is listed once and the page's query count stays the same.
    """
    query = query.strip()
    if not query:
        return cases
    if connection.vendor == "postgresql":
        return cases.filter(
            Q(pk__in=_matching(Case, "subject", "pk", query))
            | Q(pk__in=_matching(CaseMessage, "text", "case_id", query))
        )
    in_messages = CaseMessage.objects.filter(case=OuterRef("pk"), text__icontains=query)
    return cases.filter(Q(subject__icontains=query) | Exists(in_messages))


def _matching(model, field: str, key: str, query: str) -> QuerySet:
    from django.contrib.postgres.search import SearchQuery, SearchVector

    words = SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)
    found = model.objects.annotate(found=SearchVector(field, config=SEARCH_CONFIG))
    return found.filter(found=words).values(key)
