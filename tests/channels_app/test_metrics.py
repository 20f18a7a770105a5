"""/metrics, as Prometheus scrapes it: per-channel gauges read from the database in a few
queries, counters of what polls, sends and token refreshes did, and nothing for a stranger."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
from mailboxes.oauth import mailbox_access_token
from providers.oauth import OAuthFailed, SignInRefused
from tests.launch import ROOT
from tests.mailboxes.test_oauth_sign_in import approve, come_back, oauth_channel, start
from tests.pollers import conftest as pollers
from tests.pollers.conftest import message
from tests.pollers.listening import child_environ

pytestmark = pytest.mark.django_db
# The mail-in fixtures: channels on the Dovecot fixture, polled as a worker polls them.
connected, make_channel, poll = pollers.connected, pollers.make_channel, pollers.poll
loopback_allowed = pollers.loopback_allowed
State = OutboundMessage.State


def scrape(client, **headers) -> dict[tuple, float]:
    """{(name, (label, value), …): value} of every sample."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def channel(n: int, **fields) -> Mailbox:
    return Mailbox.objects.create(
        name=f"Channel {n}", email_address=f"c{n}@example.test", incoming_host="127.0.0.1", **fields
    )


def outbound(mailbox: Mailbox, state: str) -> None:
    OutboundMessage.objects.create(
        mailbox=mailbox, message_id="<m@x>", mail_from=mailbox.email_address, raw=b"", state=state
    )


def inbound(mailbox: Mailbox, uid: int, outcome: str) -> None:
    InboundMessage.objects.create(
        mailbox=mailbox,
        protocol="imap",
        uidvalidity=1,
        uid=uid,
        size=1,
        sha256="0",
        outcome=outcome,
    )


def test_channel_gauges_come_from_the_database(client):
    now = timezone.now()
    broken = channel(
        1,
        status=Mailbox.Status.ERROR,
        consecutive_failures=4,
        last_polled_at=now - timedelta(seconds=90),
        round_trip_enabled=True,
        round_trip_state=Mailbox.RoundTrip.OK,
        round_trip_last_ms=2500,
        oauth_refreshed_at=now - timedelta(seconds=300),
    )
    quiet = channel(2, status=Mailbox.Status.OK, enabled=False)
    outbound(broken, State.QUEUED)
    outbound(broken, State.QUEUED)
    outbound(broken, State.FAILED)
    inbound(broken, 1, InboundMessage.Outcome.PROCESSED)
    inbound(broken, 2, InboundMessage.Outcome.FAILED)

    samples = scrape(client)

    def value(name, mailbox, **labels):
        key = ("channel", mailbox.channel_id), ("name", mailbox.name), *labels.items()
        return samples[(f"postroom_channel_{name}", *sorted(key))]

    assert value("status", broken, status="error") == 1
    assert value("consecutive_failures", broken) == 4
    assert 89 <= value("last_poll_age_seconds", broken) < 120
    assert value("outbox_messages", broken, state="queued") == 2
    assert value("outbox_messages", broken, state="failed") == 1
    assert value("messages_last_24h", broken, kind="stored") == 2
    assert value("messages_last_24h", broken, kind="failed") == 1
    assert value("round_trip_seconds", broken) == 2.5
    assert value("round_trip_state", broken, state="ok") == 1
    assert 299 <= value("oauth_refresh_age_seconds", broken) < 400
    assert value("online", quiet) == 0
    assert value("outbox_messages", quiet, state="queued") == 0


def test_a_scrape_costs_the_same_few_queries_for_3_channels_or_30(client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            scrape(client)
        return len(captured)

    for n in range(3):
        channel(n)
    few = queries()
    for n in range(3, 30):
        outbound(channel(n), State.QUEUED)
    assert queries() == few <= 4


def test_a_poll_counts_what_it_stored_and_processed(
    client,
    connected,
    dovecot,
    mail_user,
    poll,
):
    mailbox = connected()
    before = scrape(client)
    for n in range(2):
        dovecot.deliver(mail_user, message(n))
    poll(mailbox)

    after = scrape(client)

    def grew(name, **labels):
        key = (name, *sorted(labels.items()))
        return after[key] - before.get(key, 0)

    assert grew("postroom_polls_total", result="ok") == 1
    assert grew("postroom_messages_stored_total") == 2
    assert grew("postroom_messages_processed_total", outcome="processed") == 2
    assert grew("postroom_poll_duration_seconds_count") == 1


def test_only_this_machine_or_a_token_holder_may_scrape(client, settings):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    # A proxy on this machine would make everyone look local: proxied requests are refused.
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics").status_code == 200

    settings.POSTROOM_METRICS_TOKEN = "scrape-token-123456"
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    scrape(client, REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-token-123456")


@pytest.mark.django_db(transaction=True)
def test_counters_of_other_processes_add_up_in_multiprocess_mode(
    client,
    connected,
    dovecot,
    mail_user,
    settings,
    tmp_path,
):
    """What a Celery prefork child counts shows on the web process's /metrics."""
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = child_environ(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    for _ in range(2):  # two processes, one after the other
        subprocess.run(
            [sys.executable, "manage.py", "poll", mailbox.name],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    settings.PROMETHEUS_MULTIPROC_DIR = str(shared)
    samples = scrape(client)

    assert samples[("postroom_polls_total", ("result", "ok"))] == 2
    assert samples[("postroom_messages_stored_total",)] == 1


def test_token_refreshes_are_counted_by_outcome(
    client, admin_client, oauth_provider, http_sink, django_capture_on_commit_callbacks
):
    """Refreshes against the local OpenID provider, as a poll makes them with a token about to
    expire (access tokens live 10 s, under Postroom's 30 s margin)."""
    oauth_provider.access_token_lifetime = 10
    mailbox = oauth_channel(oauth_provider)
    come_back(admin_client, approve(oauth_provider, start(admin_client, mailbox)))
    mailbox.refresh_from_db()
    before = scrape(client)

    mailbox_access_token(mailbox=mailbox)  # this provider rotates the refresh token
    oauth_provider.rotate = False
    mailbox_access_token(mailbox=mailbox)
    http_sink.respond(503)  # the provider is down for a while
    down = Mailbox.objects.get(pk=mailbox.pk)
    down.oauth_discovery_url = http_sink.url("/discovery")
    with pytest.raises(OAuthFailed):
        mailbox_access_token(mailbox=down)
    oauth_provider.revoke_account(mailbox.email_address)  # the user changed their password
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(SignInRefused):
        mailbox_access_token(mailbox=mailbox)

    after = scrape(client)
    for outcome in ("rotated", "refreshed", "failed", "refused"):
        key = ("postroom_oauth_token_refreshes_total", ("outcome", outcome))
        assert after[key] - before.get(key, 0) == 1, outcome
