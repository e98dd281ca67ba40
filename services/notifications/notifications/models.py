from django.contrib.postgres.fields import ArrayField
from django.db import models


class Notification(models.Model):
    """One notification. The table is partitioned by month on created_at (declarative range
    partitioning, created in migration 0001 and maintained by notifications.partitions), so its
    primary key is (id, created_at) in Postgres; ids alone are unique (one sequence)."""

    class Kind(models.TextChoices):
        FOLLOW = "follow"
        LIKE = "like"
        MENTION = "mention"

    id = models.BigAutoField(primary_key=True)
    recipient_id = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor_id = models.BigIntegerField()
    post_id = models.BigIntegerField(null=True)
    event_id = models.UUIDField()
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True)
    # grouping (notifications.services): distinct people this notification stands for ("alice and 3
    # others liked your post"), and the most recent of them, newest first (at most GROUP_IDS_KEPT)
    actor_count = models.IntegerField(default=1)
    actor_ids = ArrayField(models.BigIntegerField(), default=list)

    class Meta:
        managed = False  # partitioned: the DDL is hand-written in migrations (Django cannot express it)
        db_table = "notification"

    def __str__(self) -> str:
        return f"{self.kind} for {self.recipient_id} by {self.actor_id}"
