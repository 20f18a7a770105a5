from django.apps import AppConfig


def enqueue_poll(sender, *, mailbox_id: int, **kwargs) -> None:
    from pollers.tasks import poll_mailbox  # imported when needed: keeps app loading light

    poll_mailbox.delay(mailbox_id)


def enqueue_import(sender, *, mailbox_id: int, **kwargs) -> None:
    from pollers.tasks import import_history

    import_history.delay(mailbox_id)


def enqueue_send(sender, *, mailbox_id: int, **kwargs) -> None:
    from pollers.tasks import send_outbox

    send_outbox.delay(mailbox_id)


def enqueue_webhook(sender, *, delivery_id: int, **kwargs) -> None:
    from pollers.tasks import deliver_webhook

    deliver_webhook.delay(delivery_id)


def first_heartbeat(sender, **kwargs) -> None:
    """Beat's first heartbeat goes out as it starts, not one interval later: /healthz (and a
    deployment waiting on it) sees a healthy chain within seconds of `make run`."""
    from pollers.tasks import beat_heartbeat

    beat_heartbeat.delay()


class PollersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pollers"
    verbose_name = "Polling"

    def ready(self) -> None:
        from celery.signals import beat_init

        from cases.webhooks import webhook_requested
        from mailboxes.signals import import_requested, poll_requested, send_requested
        from pollers import checks  # noqa: F401 - registers the system checks

        poll_requested.connect(enqueue_poll, dispatch_uid="pollers.enqueue_poll")
        send_requested.connect(enqueue_send, dispatch_uid="pollers.enqueue_send")
        import_requested.connect(enqueue_import, dispatch_uid="pollers.enqueue_import")
        webhook_requested.connect(enqueue_webhook, dispatch_uid="pollers.enqueue_webhook")
        beat_init.connect(first_heartbeat, dispatch_uid="pollers.first_heartbeat")
