"""Old events leave the outbox and inbox in batches (never one huge DELETE holding locks).

The inbox keeps ids longer than any redelivery can take (visibility timeout, retries), so
pruning never lets a late duplicate through; dead letters stay until someone deals with them.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from shared.env import env_int
from shared.events.models import InboxEvent, OutboxEvent

BATCH = 1000


def _delete_batches(table: str, key: str, column: str, before) -> int:
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE {key} IN "
                           f"(SELECT {key} FROM {table} WHERE {column} < %s LIMIT {BATCH})", [before])
            total += cursor.rowcount
            if cursor.rowcount < BATCH:
                return total


def prune_events(*, now=None) -> dict[str, int]:
    now = now or timezone.now()
    outbox_before = now - timedelta(hours=env_int("EVENTS_OUTBOX_RETENTION_HOURS", 7 * 24))
    inbox_before = now - timedelta(hours=env_int("EVENTS_INBOX_RETENTION_HOURS", 14 * 24))
    return {
        "outbox": _delete_batches(OutboxEvent._meta.db_table, "seq", "sent_at", outbox_before),
        "inbox": _delete_batches(InboxEvent._meta.db_table, "event_id", "handled_at", inbox_before),
    }
