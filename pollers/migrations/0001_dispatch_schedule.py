"""Beat's schedule lives in the database (django-celery-beat), editable in the admin.

One entry dispatches every channel's polls; channels keep their own refresh intervals.
"""

from django.db import migrations

DISPATCH_EVERY_SECONDS = 5
TASK = "pollers.dispatch_due_polls"
NAME = "Dispatch due polls"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(
        every=DISPATCH_EVERY_SECONDS, period="seconds"
    )
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={
            "task": TASK,
            "interval": every,
            "description": "Claims the channels whose next poll is due and enqueues their polls.",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(create, remove)]
