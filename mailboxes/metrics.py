"""Prometheus counters of what mailboxes/ does itself: OAuth2 token refreshes.

They live here, not in pollers/metrics.py with the other counters, because mailboxes never
imports pollers; prometheus_client's default registry shows them on /metrics all the same
(and adds them up across processes in multiprocess mode).
"""

from __future__ import annotations

from prometheus_client import Counter

TOKEN_REFRESHES = Counter(
    "postroom_oauth_token_refreshes",
    "OAuth2 access-token refreshes at the provider, by outcome: refreshed, rotated (a new "
    "refresh token came too), refused (sign in again) or failed (worth retrying).",
    ["outcome"],
)
