"""/metrics, as Prometheus scrapes it: per-channel gauges read from the database in a few
queries, counters of what polls, sends and token refreshes did, and nothing for a stranger."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from channels_app.metrics_folder import process_identifier
from mailboxes.models import InboundMessage, Mailbox, OutboundMessage
from mailboxes.oauth import mailbox_access_token
from providers.oauth import OAuthFailed, SignInRefused
from tests.launch import ROOT, wait_until
from tests.mailboxes.test_oauth_sign_in import approve, come_back, oauth_channel, start
from tests.pollers import conftest as pollers
from tests.pollers.conftest import message
from tests.pollers.listening import child_environ
from tests.servers.net import free_port

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
    """What a Celery prefork child counts shows on the web process's /metrics; the shared
    folder need not exist beforehand."""
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    shared = tmp_path / "run" / "prometheus"  # created by the first process that starts
    for _ in range(2):  # two processes, one after the other
        poll_in_a_process(tmp_path, mailbox, shared)

    settings.PROMETHEUS_MULTIPROC_DIR = str(shared)
    samples = scrape(client)

    assert samples[("postroom_polls_total", ("result", "ok"))] == 2
    assert samples[("postroom_messages_stored_total",)] == 1
    assert samples[("postroom_counters_available",)] == 1


@pytest.mark.django_db(transaction=True)
def test_a_folder_that_cannot_be_used_stops_nothing_and_says_what_to_set(
    client,
    connected,
    dovecot,
    mail_user,
    settings,
    tmp_path,
):
    """The night-time page: PROMETHEUS_MULTIPROC_DIR points where no folder can be made. Workers
    poll and store on, and every place an operator looks says what to set."""
    mailbox = connected()
    dovecot.deliver(mail_user, message(1))
    (tmp_path / "a-file").write_text("")
    unusable = tmp_path / "a-file" / "prometheus"

    polled = poll_in_a_process(tmp_path, mailbox, unusable)
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=child_environ(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(unusable)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    settings.PROMETHEUS_MULTIPROC_DIR = str(unusable)
    response = client.get("/metrics")

    assert "1 message(s) stored" in polled.stdout, polled.stdout
    said = f"PROMETHEUS_MULTIPROC_DIR={unusable} does not exist and cannot be created"
    assert said in polled.stderr  # the process's own log, as it starts
    assert "channels_app.W001" in checked.stderr and said in checked.stderr
    assert "every Postroom process on this machine can write" in checked.stderr
    assert mailbox.inbound_messages.count() == 1
    # /metrics still serves the channel gauges (a failed scrape would hide them as well),
    # flags the missing counters, and says why in a comment.
    assert response.status_code == 200
    text = response.content.decode()
    assert f"# PROMETHEUS_MULTIPROC_DIR={unusable} does not exist, so" in text
    samples = scrape(client)
    assert samples[("postroom_counters_available",)] == 0
    online = ("postroom_channel_online", ("channel", mailbox.channel_id), ("name", mailbox.name))
    assert samples[online] == 1
    assert not any(name == "postroom_polls_total" for name, *_ in samples)


def poll_in_a_process(var_dir, mailbox: Mailbox, folder) -> subprocess.CompletedProcess:
    """`manage.py poll` (a worker, as far as counters go) with PROMETHEUS_MULTIPROC_DIR=folder."""
    return subprocess.run(
        [sys.executable, "manage.py", "poll", mailbox.name],
        cwd=ROOT,
        env=child_environ(var_dir, PROMETHEUS_MULTIPROC_DIR=str(folder)),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


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


def test_gunicorn_marks_a_dead_workers_files_dead(tmp_path):
    """The master's child_exit hook (channels_app/gunicorn_conf.py) does prometheus_client's
    bookkeeping for a worker that died: its live gauges go (Postroom has none yet; this keeps
    one from lingering), its counters stay part of the totals."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    log = tmp_path / "gunicorn.log"
    command = [
        *(sys.executable, "-m", "gunicorn", "channels_app.wsgi", "--workers=1"),
        *("--config=python:channels_app.gunicorn_conf", f"--bind=127.0.0.1:{free_port()}"),
    ]
    env = child_environ(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(folder))
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        booted = wait_until(
            lambda: re.search(r"Booting worker with pid: (\d+)", log.read_text()), what="a worker"
        )
        pid = int(booted[1])
        live = folder / f"gauge_livesum_{process_identifier(pid)}.db"
        counted = folder / f"counter_{process_identifier(pid)}.db"
        live.write_bytes(b"")
        counted.write_bytes(b"")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not live.exists(), what="the dead worker's live gauge file to go")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert counted.exists()
