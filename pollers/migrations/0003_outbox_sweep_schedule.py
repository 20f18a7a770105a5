"""Beat's outbox sweeper: re-enqueues sends that are due or whose claim expired, because a
broker may lose a task with its worker."""

from django.db import migrations

SWEEP_EVERY_SECONDS = 60
NAME = "Sweep outbox"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=SWEEP_EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={
            "task": "pollers.sweep_outbox",
            "interval": every,
            "description": "Re-enqueues outgoing mail that is due or whose sender died.",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("pollers", "0002_send_slots")]
    operations = [migrations.RunPython(create, remove)]
