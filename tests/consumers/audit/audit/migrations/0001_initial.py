from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="AuditedPost",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("event_id", models.UUIDField(unique=True)),
                ("post_id", models.BigIntegerField()),
                ("author_id", models.BigIntegerField()),
                ("received_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "audit_post"},
        ),
    ]
