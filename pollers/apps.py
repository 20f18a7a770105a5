from django.apps import AppConfig


def enqueue_poll(sender, *, mailbox_id: int, **kwargs) -> None:
    from pollers.tasks import poll_mailbox  # imported when needed: keeps app loading light

    poll_mailbox.delay(mailbox_id)


class PollersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pollers"
    verbose_name = "Polling"

    def ready(self) -> None:
        from mailboxes.signals import poll_requested

        poll_requested.connect(enqueue_poll, dispatch_uid="pollers.enqueue_poll")
