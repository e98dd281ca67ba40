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

    class Meta:
        managed = False  # partitioned: the DDL is hand-written in migrations (Django cannot express it)
        db_table = "notification"

    def __str__(self) -> str:
        return f"{self.kind} for {self.recipient_id} by {self.actor_id}"
