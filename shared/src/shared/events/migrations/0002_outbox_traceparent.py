from django.db import migrations, models


class Migration(migrations.Migration):
    """The trace context an event was published in (shared.tracing): the relay and the consumer's
    task join the producer's trace. A database default, so rows written by the previous release
    (which names its columns) during a rolling deploy get ''."""

    dependencies = [
        ("events", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboxevent",
            name="traceparent",
            field=models.CharField(blank=True, db_default="", default="", max_length=55),
        ),
    ]
