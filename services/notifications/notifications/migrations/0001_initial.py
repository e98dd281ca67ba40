from django.db import migrations, models


def create_partitions(apps, schema_editor):
    from notifications.partitions import partitions_ensure

    partitions_ensure()


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(
                sql="""
                CREATE TABLE notification (
                    id bigserial NOT NULL,
                    recipient_id bigint NOT NULL,
                    kind varchar(16) NOT NULL,
                    actor_id bigint NOT NULL,
                    post_id bigint NULL,
                    event_id uuid NOT NULL,
                    created_at timestamptz NOT NULL,
                    read_at timestamptz NULL,
                    PRIMARY KEY (id, created_at)
                ) PARTITION BY RANGE (created_at);
                -- the list, newest first (keyset on id), and the unread list / count
                CREATE INDEX notification_recipient_idx ON notification (recipient_id, id DESC);
                CREATE INDEX notification_unread_idx ON notification (recipient_id, id DESC) WHERE read_at IS NULL;
                -- user.deleted (notifications the user caused) and post.deleted
                CREATE INDEX notification_actor_idx ON notification (actor_id);
                CREATE INDEX notification_post_idx ON notification (post_id) WHERE post_id IS NOT NULL;
                """,
                reverse_sql="DROP TABLE notification CASCADE;",
            )],
            state_operations=[migrations.CreateModel(
                name="Notification",
                fields=[
                    ("id", models.BigAutoField(primary_key=True, serialize=False)),
                    ("recipient_id", models.BigIntegerField()),
                    ("kind", models.CharField(choices=[("follow", "Follow"), ("like", "Like"), ("mention", "Mention")],
                                              max_length=16)),
                    ("actor_id", models.BigIntegerField()),
                    ("post_id", models.BigIntegerField(null=True)),
                    ("event_id", models.UUIDField()),
                    ("created_at", models.DateTimeField()),
                    ("read_at", models.DateTimeField(null=True)),
                ],
                options={"db_table": "notification", "managed": False},
            )],
        ),
        migrations.RunPython(create_partitions, migrations.RunPython.noop),
    ]
