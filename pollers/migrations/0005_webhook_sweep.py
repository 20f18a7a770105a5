"""Beat's webhook sweeper: sends deliveries whose retry is due, or whose task or worker was
lost (a broker may lose a task with its worker)."""

from django.db import migrations

SWEEP_EVERY_SECONDS = 60
NAME = "Sweep webhooks"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=SWEEP_EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={
            "task": "pollers.sweep_webhooks",
            "interval": every,
            "description": "Sends webhook deliveries that are due or whose sender died.",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("pollers", "0004_idle_listeners")]
    operations = [migrations.RunPython(create, remove)]
