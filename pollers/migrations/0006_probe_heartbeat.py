"""The beat heartbeat (for /healthz) and the round-trip probes' dispatcher, both every 30 s."""

from django.db import migrations, models

EVERY_SECONDS = 30
ENTRIES = {
    "Heartbeat": (
        "pollers.beat_heartbeat",
        "Stamps the beat heartbeat that /healthz reports: beat, broker and a worker are alive.",
    ),
    "Round-trip probes": (
        "pollers.dispatch_round_trips",
        "Sends the channels' round-trip probes that are due and marks those that never came.",
    ),
}


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    for name, (task, description) in ENTRIES.items():
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": every, "description": description}
        )


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=list(ENTRIES)).delete()


class Migration(migrations.Migration):
    dependencies = [("pollers", "0005_webhook_sweep")]

    operations = [
        migrations.CreateModel(
            name="Heartbeat",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=50, unique=True)),
                ("seen_at", models.DateTimeField()),
            ],
        ),
        migrations.RunPython(create, remove),
    ]
