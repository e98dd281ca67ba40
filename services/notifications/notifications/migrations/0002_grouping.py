from django.db import migrations


class Migration(migrations.Migration):
    """Grouping (notifications.services): how many distinct people a notification stands for, and
    the most recent of them (to tell a repeat from a new person). Added to the partitioned parent,
    so every partition, existing or future, has them."""

    dependencies = [("notifications", "0001_initial")]
    # docs/releasing.md: checked by hand, since the linter reads raw SQL by keyword (NOT NULL, and DROP
    # COLUMN in the reverse SQL). Not CONCURRENTLY: Postgres can't build an index that way on a
    # partitioned parent; the table is small enough for the brief lock (one index on (recipient, actor, kind)).
    reviewed_for_rolling_deploy = ("both columns have a constant DEFAULT (no table rewrite since Postgres 11), "
                                   "so the previous release's inserts, which do not name them, still succeed")

    operations = [
        migrations.RunSQL(
            sql="""
                ALTER TABLE notification
                    ADD COLUMN actor_count integer NOT NULL DEFAULT 1,
                    ADD COLUMN actor_ids bigint[] NOT NULL DEFAULT '{}';
                CREATE INDEX notification_recipient_actor_idx ON notification (recipient_id, actor_id, kind);
            """,
            reverse_sql="""
                DROP INDEX notification_recipient_actor_idx;
                ALTER TABLE notification DROP COLUMN actor_count, DROP COLUMN actor_ids;
            """,
        ),
    ]
