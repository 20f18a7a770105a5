"""The webhook flow: mail delivered into Dovecot and polled is POSTed, signed, to a real local
HTTP endpoint; failures are retried or given up on as the endpoint's answer says."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from cases.models import Case, WebhookDelivery
from cases.services import inbound_replay
from channels_app.celery import app as celery_app
from mailboxes.models import InboundMessage
from pollers.outbox import outbox_send_due
from pollers.tasks import sweep_webhooks
from pollers.webhooks import webhook_deliver
from tests.cases.conftest import case_of, mail
from tests.cases.test_confirm import confirmation_link, sending_through

pytestmark = pytest.mark.django_db
State = WebhookDelivery.State
SECRET = "whsec-kettle-2026"


@pytest.fixture
def eager_tasks():
    """Tasks run inline, as a worker would run them, so the outcome is visible at once."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def hooked(channel, http_sink):
    """A channel on the webhook flow, posting to the local HTTP sink."""

    def make(**fields):
        return channel(flow="webhook", webhook_url=http_sink.url(), webhook_secret=SECRET, **fields)

    return make


@pytest.fixture
def arrives(receive, eager_tasks, django_capture_on_commit_callbacks):
    """receive(), then what a worker does once the pipeline's transaction has committed."""

    def run(mailbox, raw: bytes) -> InboundMessage:
        with django_capture_on_commit_callbacks(execute=True):
            return receive(mailbox, raw)

    return run


def signature_valid(request) -> bool:
    """The receiver's check, from docs/webhooks.md: HMAC-SHA256 over "<timestamp>." + body."""
    signed = request.headers["x-postroom-timestamp"].encode() + b"." + request.body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers["x-postroom-signature"])


def delivery_of(row: InboundMessage) -> WebhookDelivery:
    return WebhookDelivery.objects.get(inbound=row)


def time_passes(delivery: WebhookDelivery) -> None:
    """The retry's moment comes (time moved, not waited for)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_received_email_is_posted_signed_with_its_case_link(hooked, arrives, http_sink):
    support = hooked()
    raw = mail(
        subject="Kettle receipt",
        to="support@example.test, Sales <sales@example.test>",
        headers={"Cc": "Dave <dave@example.org>"},
        body="Receipt attached.",
        attachments=[("receipt.pdf", b"%PDF-1.4 receipt")],
    )

    row = arrives(support, raw)

    case = case_of(row)
    (request,) = http_sink.requests
    assert signature_valid(request)
    payload = json.loads(request.body)
    assert payload["schema"] == "postroom.email.v1"
    assert payload["delivery_id"] == request.headers["x-postroom-delivery"]
    assert payload["channel"]["address"] == support.email_address
    message = payload["message"]
    assert message["from"] == {"address": "carol@example.org", "name": "Carol Customer"}
    assert message["to"] == ["support@example.test", "sales@example.test"]
    assert message["cc"] == ["dave@example.org"]
    assert message["subject"] == "Kettle receipt"
    assert message["text"].strip() == "Receipt attached."
    assert message["attachments"] == [
        {
            "filename": "receipt.pdf",
            "content_type": "application/pdf",
            "size": len(b"%PDF-1.4 receipt"),
            "inline": False,
        }
    ]
    assert payload["case"]["reference"] == case.reference
    assert payload["case"]["url"].endswith(reverse("cases:detail", args=[case.pk]))
    assert delivery_of(row).state == State.DELIVERED
    assert f"webhook delivery {delivery_of(row).pk} queued" in row.outcome_reason


def test_processing_the_email_again_does_not_post_it_twice(hooked, arrives, http_sink):
    support = hooked()
    row = arrives(support, mail())

    assert inbound_replay(message_id=row.pk) == InboundMessage.Outcome.PROCESSED
    sweep_webhooks()

    assert len(http_sink.requests) == 1
    assert WebhookDelivery.objects.filter(inbound=row).count() == 1
    assert Case.objects.filter(mailbox=support).count() == 1


def test_a_server_error_is_retried_and_then_delivered_with_the_same_body(
    hooked, arrives, http_sink
):
    support = hooked()
    http_sink.respond(500, body=b"upstream down")

    row = arrives(support, mail())

    delivery = delivery_of(row)
    assert delivery.state == State.RETRYING
    assert "HTTP 500 (upstream down)" in delivery.last_error
    assert delivery.next_attempt_at > timezone.now()
    assert sweep_webhooks() == 0  # not due yet

    time_passes(delivery)
    assert sweep_webhooks() == 1

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_error) == (State.DELIVERED, 2, "")
    first, second = http_sink.requests
    assert first.body == second.body
    assert first.headers["x-postroom-delivery"] == second.headers["x-postroom-delivery"]
    assert signature_valid(second)


def test_too_many_requests_waits_as_long_as_the_endpoint_asks(hooked, arrives, http_sink):
    support = hooked()
    http_sink.respond(429, headers={"Retry-After": "7200"})

    delivery = delivery_of(arrives(support, mail()))

    assert delivery.state == State.RETRYING
    assert delivery.next_attempt_at > timezone.now() + timedelta(hours=1, minutes=59)


def test_a_client_error_fails_the_delivery_with_the_reason(hooked, arrives, http_sink):
    support = hooked()
    http_sink.respond(410, body=b"hook deleted")

    delivery = delivery_of(arrives(support, mail()))

    assert delivery.state == State.FAILED
    assert "HTTP 410 (hook deleted)" in delivery.last_error
    time_passes(delivery)
    assert sweep_webhooks() == 0
    assert len(http_sink.requests) == 1


def test_it_gives_up_after_the_maximum_attempts(hooked, arrives, http_sink, settings):
    settings.POSTROOM_WEBHOOK_MAX_ATTEMPTS = 2
    support = hooked()
    http_sink.respond(503)
    http_sink.respond(503)

    delivery = delivery_of(arrives(support, mail()))
    time_passes(delivery)
    sweep_webhooks()

    delivery.refresh_from_db()
    assert delivery.state == State.FAILED
    assert delivery.last_error.startswith("Gave up after 2 attempts: The webhook answered HTTP 503")


def test_a_url_in_a_blocked_network_is_refused_at_send_time(channel, arrives):
    # Saved before the rule existed, or written around the form: the send refuses it anyway.
    support = channel(flow="webhook", webhook_url="http://169.254.169.254/latest/meta-data/")

    delivery = delivery_of(arrives(support, mail()))

    assert delivery.state == State.FAILED
    assert "169.254.169.254 is in a blocked network" in delivery.last_error


def test_a_delivered_row_is_never_claimed_again(hooked, receive, http_sink):
    support = hooked()
    delivery = delivery_of(receive(support, mail()))  # its task was lost: nothing sent yet
    http_sink.respond(200)

    assert webhook_deliver(delivery_id=delivery.pk) == State.DELIVERED
    assert webhook_deliver(delivery_id=delivery.pk) is None  # already done: not claimed again
    assert len(http_sink.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_a_delivery_once(hooked, receive, http_sink, eager_tasks):
    support = hooked()
    http_sink.respond(503)
    delivery = delivery_of(receive(support, mail()))  # the first attempt, after commit
    time_passes(delivery)
    http_sink.respond(200, delay=0.5)  # slow enough that both workers are in flight together
    barrier, outcomes = threading.Barrier(2), []

    def worker() -> None:
        barrier.wait()
        try:
            outcomes.append(webhook_deliver(delivery_id=delivery.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(outcomes) == 2 and set(outcomes) == {State.DELIVERED, None}
    assert len(http_sink.requests) == 2  # the 503, then one POST however many workers


def test_a_delivery_whose_worker_died_mid_send_is_sent_by_the_sweeper(
    hooked, receive, http_sink, eager_tasks
):
    support = hooked()
    delivery = delivery_of(receive(support, mail()))
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=State.SENDING, attempts=1, claim_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert sweep_webhooks() == 1

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (State.DELIVERED, 2)
    assert len(http_sink.requests) == 1


def test_the_admin_lists_deliveries_and_retries_a_failed_one_now(
    hooked, arrives, http_sink, admin_client, django_capture_on_commit_callbacks
):
    support = hooked()
    http_sink.respond(404, body=b"wrong path")
    delivery = delivery_of(arrives(support, mail()))

    page = admin_client.get(reverse("admin:cases_webhookdelivery_changelist")).content.decode()
    assert "Failed" in page and "HTTP 404 (wrong path)" in page

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:cases_webhookdelivery_changelist"),
            {"action": "retry_now", "_selected_action": [delivery.pk]},
        )

    delivery.refresh_from_db()
    assert delivery.state == State.DELIVERED
    assert len(http_sink.requests) == 2


def test_beat_runs_the_sweeper_every_minute():
    task = PeriodicTask.objects.get(task="pollers.sweep_webhooks")
    assert task.enabled and task.interval.every == 60 and task.interval.period == "seconds"


def test_mail_held_for_confirmation_is_posted_once_the_sender_confirms(
    hooked, receive, smtp, client, http_sink, eager_tasks, django_capture_on_commit_callbacks
):
    support = sending_through(smtp, hooked(confirm_unknown_senders=True))
    with django_capture_on_commit_callbacks(execute=True):
        row = receive(support, mail(subject="Is my kettle safe?"))
    outbox_send_due(mailbox_id=support.pk)
    assert http_sink.requests == []  # held: maybe spam, not posted

    path = confirmation_link(smtp, "carol@example.org").split("://", 1)[1].split("/", 1)[1]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/{path}")

    row.refresh_from_db()
    (request,) = http_sink.requests
    payload = json.loads(request.body)
    assert payload["message"]["subject"] == "Is my kettle safe?"
    assert payload["case"]["reference"] == case_of(row).reference
    assert delivery_of(row).state == State.DELIVERED
