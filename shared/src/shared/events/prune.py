"""Old events leave the outbox and inbox in batches (never one huge DELETE holding locks).

The inbox keeps ids longer than any redelivery can take (visibility timeout, retries), so
pruning never lets a late duplicate through; dead letters stay until someone deals with them.
An outbox row is kept, whatever its age, while any consumer subscribed to it (the registry,
shared.events.subscriptions) has not acknowledged it (the ack
ledger in the broker Redis, shared.events.ledger): the relay may still have to publish it again.
If that Redis cannot be asked, no outbox row is deleted.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from shared.env import env_int
from shared.events import ledger, subscriptions
from shared.events.models import InboxEvent, OutboxEvent

BATCH = 1000


def _delete_batches(table: str, key: str, column: str, before) -> int:
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < %s LIMIT {BATCH})", [before]
            )
            total += cursor.rowcount
            if cursor.rowcount < BATCH:
                return total


def _delete_acknowledged_outbox(before, redis_url: str, service: str) -> int:
    """Sent rows older than `before` that no consumer still has pending, in batches by seq."""
    table = OutboxEvent._meta.db_table
    client = ledger.client(redis_url, bulk=True)
    total, after = 0, 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT seq, event_id::text, type, version FROM {table} WHERE sent_at < %s AND seq > %s "
                f"ORDER BY seq LIMIT {BATCH}",
                [before, after],
            )
            rows = cursor.fetchall()
        if not rows:
            return total
        after = rows[-1][0]
        routes = subscriptions.read(client)  # raises if Redis is unreachable: then nothing is deleted
        pipe = client.pipeline(transaction=False)
        asked = [
            (seq, event_id, consumer) for seq, event_id, type_, version in rows for consumer in routes.consumers(type_, version)
        ]
        for _, event_id, consumer in asked:
            pipe.zscore(ledger.pending_key(consumer, service), event_id)
        scores = pipe.execute()  # raises if Redis is unreachable: then nothing is deleted
        still_pending = {seq for (seq, _, _), score in zip(asked, scores, strict=True) if score is not None}
        done = [seq for seq, _, _, _ in rows if seq not in still_pending]
        if done:
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE seq = ANY(%s)", [done])
                total += cursor.rowcount
        if len(rows) < BATCH:
            return total


def prune_events(*, now=None, redis_url: str | None = None) -> dict[str, int]:
    now = now or timezone.now()
    outbox_before = now - timedelta(hours=env_int("EVENTS_OUTBOX_RETENTION_HOURS", 7 * 24))
    inbox_before = now - timedelta(hours=env_int("EVENTS_INBOX_RETENTION_HOURS", 14 * 24))
    return {
        "outbox": _delete_acknowledged_outbox(outbox_before, redis_url or _broker_url(), settings.SERVICE_NAME),
        "inbox": _delete_batches(InboxEvent._meta.db_table, "event_id", "handled_at", inbox_before),
    }


def _broker_url() -> str:
    from shared.events.celery_config import celery_config

    return celery_config(settings.SERVICE_NAME)["broker_url"]
