from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0003_workspace_tasks_queue"),
    ]

    operations = [
        migrations.AlterField(
            model_name="autoreply",
            name="kind",
            field=models.CharField(
                choices=[
                    ("ack", "Acknowledgement"),
                    ("refusal", "Refusal"),
                    ("confirm", "Confirmation request"),
                    ("size", "Size notice"),
                ],
                max_length=10,
            ),
        ),
    ]
