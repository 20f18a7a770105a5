"""Prometheus metrics: per-process counters, and per-channel gauges read at scrape time.

Counters count what this process did (polls, messages, sends, probes) and are incremented
where it happens. OAuth2 token refreshes happen in mailboxes/, which may not import pollers:
their counter is in mailboxes/metrics.py, re-exported here so this stays the list.
With PROMETHEUS_MULTIPROC_DIR set (Celery's prefork children, gunicorn's workers)
prometheus_client keeps them in files there, and /metrics adds them up.

The channel gauges are not kept anywhere: ChannelCollector reads them from the database when
/metrics is scraped, in three queries whatever the number of channels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mailboxes.metrics import TOKEN_REFRESHES  # noqa: F401 - see the module docstring
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage

POLLS = Counter("postroom_polls", "Polls of a channel's incoming server, by result.", ["result"])
POLL_SECONDS = Histogram(
    "postroom_poll_duration_seconds",
    "How long a poll took, login to logout.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
MESSAGES_STORED = Counter("postroom_messages_stored", "Messages fetched and stored.")
MESSAGES_PROCESSED = Counter(
    "postroom_messages_processed",
    "Stored messages run through the pipeline, by outcome (processed, ignored, held, failed).",
    ["outcome"],
)
OUTBOX = Counter(
    "postroom_outbox_messages",
    "Outgoing messages a server answered for, by result (sent, retrying, failed, deferred).",
    ["result"],
)
ROUND_TRIPS = Counter(
    "postroom_round_trips", "Round-trip probes, by result (arrived, missed).", ["result"]
)

OUTBOX_STATES = (
    OutboundMessage.State.QUEUED,
    OutboundMessage.State.RETRYING,
    OutboundMessage.State.SENDING,
    OutboundMessage.State.FAILED,
)
CHANNEL_FIELDS = (
    "pk",
    "channel_id",
    "name",
    "enabled",
    "status",
    "last_polled_at",
    "consecutive_failures",
    "push_state",
    "round_trip_enabled",
    "round_trip_state",
    "round_trip_last_ms",
    "round_trip_last_ok_at",
    "oauth_refreshed_at",
)


def poll_observed(*, ok: bool, seconds: float, stored: int) -> None:
    POLLS.labels(result="ok" if ok else "error").inc()
    POLL_SECONDS.observe(seconds)
    MESSAGES_STORED.inc(stored)


class ChannelCollector(Collector):
    """Per-channel gauges, labelled with the channel ID and name."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        gauges = _gauges()
        outbox = _outbox_counts()
        received = _received_last_day(now)
        for row in Mailbox.objects.order_by("pk").values(*CHANNEL_FIELDS):
            labels = [row["channel_id"], row["name"]]
            _channel_values(gauges, labels, row, now)
            for state in OUTBOX_STATES:
                gauges["outbox"].add_metric([*labels, state], outbox[row["pk"]][state])
            stored, failed = received.get(row["pk"], (0, 0))
            gauges["received"].add_metric([*labels, "stored"], stored)
            gauges["received"].add_metric([*labels, "failed"], failed)
        yield from gauges.values()


def _gauges() -> dict[str, GaugeMetricFamily]:
    base = ["channel", "name"]

    def gauge(name: str, documentation: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"postroom_channel_{name}", documentation, labels=[*base, *extra])

    return {
        "online": gauge("online", "1 if the channel is online."),
        "status": gauge(
            "status",
            "1 for the channel's colour: ok, warning, error or unchecked (probe included).",
            ("status",),
        ),
        "poll_age": gauge("last_poll_age_seconds", "Seconds since the last poll ended."),
        "failures": gauge("consecutive_failures", "Polls that failed in a row."),
        "push": gauge("on_push", "1 while an IMAP IDLE listener reports push for the channel."),
        "outbox": gauge("outbox_messages", "Outgoing messages by state.", ("state",)),
        "received": gauge(
            "messages_last_24h", "Messages stored in the last 24 h, and those failed.", ("kind",)
        ),
        "oauth_age": gauge(
            "oauth_refresh_age_seconds", "Seconds since the OAuth2 access token was refreshed."
        ),
        "rtt": gauge("round_trip_seconds", "The last round-trip probe's time, send to stored."),
        "rtt_ok_age": gauge(
            "round_trip_last_ok_age_seconds", "Seconds since a round-trip probe last arrived."
        ),
        "rtt_state": gauge(
            "round_trip_state", "1 for the probe's state: ok, late or failing.", ("state",)
        ),
    }


def _channel_values(gauges: dict, labels: list[str], row: dict, now: datetime) -> None:
    probe = row["round_trip_state"] if row["round_trip_enabled"] else Mailbox.RoundTrip.NONE
    health = Mailbox.colour(row["status"], probe)
    gauges["online"].add_metric(labels, int(row["enabled"]))
    gauges["status"].add_metric([*labels, health], 1)
    gauges["failures"].add_metric(labels, row["consecutive_failures"])
    gauges["push"].add_metric(labels, int(row["push_state"] == Mailbox.PushState.PUSH))
    if row["last_polled_at"] is not None:
        gauges["poll_age"].add_metric(labels, _age(now, row["last_polled_at"]))
    if row["oauth_refreshed_at"] is not None:
        gauges["oauth_age"].add_metric(labels, _age(now, row["oauth_refreshed_at"]))
    if not row["round_trip_enabled"]:
        return
    if row["round_trip_state"]:
        gauges["rtt_state"].add_metric([*labels, row["round_trip_state"]], 1)
    if row["round_trip_last_ms"] is not None:
        gauges["rtt"].add_metric(labels, row["round_trip_last_ms"] / 1000)
    if row["round_trip_last_ok_at"] is not None:
        gauges["rtt_ok_age"].add_metric(labels, _age(now, row["round_trip_last_ok_at"]))


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _outbox_counts() -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTBOX_STATES, 0))
    rows = (
        OutboundMessage.objects.filter(state__in=OUTBOX_STATES)
        .values("mailbox_id", "state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in rows:
        counts[row["mailbox_id"]][row["state"]] = row["n"]
    return counts


def _received_last_day(now: datetime) -> dict[int, tuple[int, int]]:
    failed = Q(outcome=InboundMessage.Outcome.FAILED)
    rows = (
        InboundMessage.objects.filter(stored_at__gte=now - timedelta(hours=24))
        .values("mailbox_id")
        .annotate(stored=Count("pk"), failed=Count("pk", filter=failed))
        .order_by()
    )
    return {row["mailbox_id"]: (row["stored"], row["failed"]) for row in rows}
