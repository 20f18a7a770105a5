"""Timing a page as a browser would ask for it: render time and query count per request."""

from __future__ import annotations

import statistics
import time


def page_timings(user, path: str, params: dict, rounds: int, row_marker: bytes) -> dict:
    """Median and p95 render time (ms), the query counts seen, and how many rows were listed
    (`row_marker` counted in the last page)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    client.get(path, params)  # warm the template cache
    times, queries = [], set()
    for _ in range(rounds):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(path, params)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        queries.add(len(captured))
    return {
        "median_ms": statistics.median(times),
        "p95_ms": statistics.quantiles(times, n=20)[-1],
        "queries": "/".join(str(q) for q in sorted(queries)),
        "listed": response.content.count(row_marker),
    }
