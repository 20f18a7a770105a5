from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mailboxes", "0006_oauth"),
    ]

    operations = [
        migrations.AddField(
            model_name="mailbox",
            name="oauth_refused_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="sign-in refused at"),
        ),
    ]
