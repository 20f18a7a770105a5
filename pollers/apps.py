from django.apps import AppConfig


class PollersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pollers"
    verbose_name = "Polling"
