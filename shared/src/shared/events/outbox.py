"""Producer side: write the event to the outbox in the caller's transaction."""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.db import connection
from django.utils import timezone

from shared import tracing
from shared.events.catalogue import EventSchemaError, validate_data
from shared.events.models import OutboxEvent
from shared.requestid import get_request_id


def notify_channel(service: str) -> str:
    return f"events_outbox_{service}"


def publish(type_: str, data: dict, *, version: int | None = None) -> uuid.UUID:
    """Record an event to be delivered once the surrounding transaction commits.

    Must run inside `transaction.atomic`: the event exists if and only if the change does.
    The NOTIFY is transactional too, so the relay wakes when (and only if) the row is visible.
    `version`: the catalogue's newest by default; an older one still in catalogue.PREVIOUS is
    published beside it, in the same transaction (docs/events.md#evolving-an-event).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("publish() must be called inside transaction.atomic (the outbox shares its transaction)")
    spec = validate_data(type_, data, version)
    if spec.producer != settings.SERVICE_NAME:
        raise EventSchemaError(f"{type_} is produced by {spec.producer}, not {settings.SERVICE_NAME}")
    event_id = uuid.uuid4()
    with connection.cursor() as cursor:  # one round trip: the row and the wake-up call
        cursor.execute(
            f"WITH row AS (INSERT INTO {OutboxEvent._meta.db_table} "
            "(event_id, type, version, occurred_at, data, request_id, traceparent) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) "
            "RETURNING seq) SELECT pg_notify(%s, '') FROM row",
            [
                event_id,
                type_,
                spec.version,
                timezone.now(),
                json.dumps(data),
                get_request_id() or "",
                tracing.traceparent(),
                notify_channel(settings.SERVICE_NAME),
            ],
        )
    return event_id
