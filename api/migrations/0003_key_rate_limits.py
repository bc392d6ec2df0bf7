from django.core.management import call_command
from django.db import migrations, models


def create_cache_table(apps, schema_editor):
    """Django's database cache (settings.CACHES without Redis) needs its table; a no-op for other caches."""
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):

    dependencies = [
        ("api", "0002_key_scopes"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="rate",
            field=models.FloatField(
                blank=True,
                null=True,
                help_text="Requests per second this key may make (all workers together); empty: no limit.",
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="burst",
            field=models.PositiveIntegerField(
                blank=True,
                null=True,
                help_text="Requests it may make at once after a quiet spell; empty: one second's worth of the rate.",
            ),
        ),
        migrations.CreateModel(
            name="RateLimitState",
            fields=[
                ("key", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("state", models.JSONField(default=list)),
            ],
            options={"verbose_name": "rate limit state"},
        ),
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
