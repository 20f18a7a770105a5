from django.apps import AppConfig


class ChannelsAppConfig(AppConfig):
    """The project package as an app, only so that its system checks are registered."""

    name = "channels_app"
    verbose_name = "Postroom"

    def ready(self) -> None:
        from channels_app import checks  # noqa: F401 - registers the system checks
