"""Outbox (producer side), inbox and dead letters (consumer side). Each service that installs
`shared.events` gets these tables in its own schema; no service reads another's."""

from django.db import models
from django.db.models import Q


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it describes; the relay publishes it."""

    seq = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField()
    occurred_at = models.DateTimeField()
    data = models.JSONField()
    request_id = models.CharField(max_length=128, blank=True, default="")
    # W3C traceparent of the span that published it (shared.tracing); the relay publishes in that trace.
    # A database default: rows inserted by a release that does not know the column get "".
    traceparent = models.CharField(max_length=55, blank=True, default="", db_default="")
    sent_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "events_outbox"
        indexes = [
            # the relay's scan: pending rows in commit order; stays tiny because sent rows leave it
            models.Index(fields=["seq"], condition=Q(sent_at__isnull=True), name="outbox_pending_idx"),
            # pruning: sent rows by age
            models.Index(fields=["sent_at"], condition=Q(sent_at__isnull=False), name="outbox_sent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class InboxEvent(models.Model):
    """An event this service has applied; inserted in the handler's own transaction."""

    event_id = models.UUIDField(primary_key=True)
    type = models.CharField(max_length=64)
    handled_at = models.DateTimeField()

    class Meta:
        db_table = "events_inbox"
        indexes = [models.Index(fields=["handled_at"], name="inbox_handled_idx")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class DeadLetter(models.Model):
    """An event (or task) that kept failing after its retries: kept for a human to look at and replay."""

    event_id = models.UUIDField(null=True)
    type = models.CharField(max_length=64)
    task = models.CharField(max_length=100)
    payload = models.JSONField()
    error = models.TextField()
    attempts = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "events_dead_letter"
        indexes = [models.Index(fields=["created_at"], name="dead_letter_created_idx")]

    def __str__(self) -> str:
        return f"dead {self.type} {self.event_id}"
