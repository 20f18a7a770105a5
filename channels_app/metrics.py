"""/metrics for Prometheus: this process's counters (or, in multiprocess mode, every process's
on this machine) and the per-channel gauges read from the database.

Access: with POSTROOM_METRICS_TOKEN set, `Authorization: Bearer <token>` from anywhere;
without one, direct requests from this machine only. A request that came through a proxy
(X-Forwarded-For, Forwarded, X-Real-IP) is not "from this machine" even when the proxy is.

With a PROMETHEUS_MULTIPROC_DIR that cannot be read, the answer is still a 200 with the channel
gauges: a failed scrape would hide them too (Prometheus drops the whole target), and they say
whether mail flows. The process counters are left out instead, `postroom_counters_available`
is 0, and a comment line says what to set.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from channels_app.metrics_folder import folder_problem, problem_text
from pollers.metrics import ChannelCollector

PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    channels = CollectorRegistry()
    channels.register(ChannelCollector())
    body = _process_counters() + generate_latest(channels)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def _process_counters() -> bytes:
    folder = settings.PROMETHEUS_MULTIPROC_DIR
    if not folder:
        return generate_latest(REGISTRY)
    problem = folder_problem(folder)
    available = GaugeMetricFamily(
        "postroom_counters_available",
        "1 if the counters of every process sharing PROMETHEUS_MULTIPROC_DIR are here.",
        value=0 if problem else 1,
    )
    registry = CollectorRegistry()
    registry.register(_Families(available))
    if problem:
        comment = problem_text(folder, problem).replace("\n", " ")  # one line, whatever the path
        return f"# {comment}\n".encode() + generate_latest(registry)
    # prometheus_client's multiprocess mode: the counters of every process that wrote there.
    MultiProcessCollector(registry, path=folder)
    return generate_latest(registry)


class _Families(Collector):
    """Metric families made up front, for a registry."""

    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.POSTROOM_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given and secrets.compare_digest(given.encode(), token.encode()):
            return None
        response = HttpResponse("A bearer token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _direct_from_loopback(request):
        return None
    return HttpResponse(
        "Metrics are served to this machine only: set POSTROOM_METRICS_TOKEN to scrape "
        "from elsewhere.\n",
        status=403,
    )


def _direct_from_loopback(request: HttpRequest) -> bool:
    if any(request.META.get(name) for name in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
