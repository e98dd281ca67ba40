"""The versioned envelope every event travels in (JSON: `{id, type, version, occurred_at,
producer, data, request_id}`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.events.catalogue import EventSchemaError

ENVELOPE_KEYS = ("id", "type", "version", "occurred_at", "producer", "data")


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    producer: str
    data: dict[str, Any]
    request_id: str = ""


def envelope_to(event: Event) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "type": event.type,
        "version": event.version,
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "producer": event.producer,
        "data": event.data,
        "request_id": event.request_id,
    }


def envelope_from(raw: Any) -> Event:
    """Parse and check an envelope; EventSchemaError when it is not one (never retried)."""
    if not isinstance(raw, dict) or any(key not in raw for key in ENVELOPE_KEYS):
        raise EventSchemaError(f"not an event envelope: {str(raw)[:200]}")
    try:
        event_id = uuid.UUID(str(raw["id"]))
        occurred_at = datetime.fromisoformat(str(raw["occurred_at"]).replace("Z", "+00:00"))
    except ValueError as exc:
        raise EventSchemaError(f"bad envelope: {exc}") from None
    if not isinstance(raw["version"], int) or not isinstance(raw["data"], dict) or not isinstance(raw["type"], str):
        raise EventSchemaError("bad envelope: version must be an int, data an object, type a string")
    return Event(
        id=event_id,
        type=raw["type"],
        version=raw["version"],
        occurred_at=occurred_at,
        producer=str(raw["producer"]),
        data=raw["data"],
        request_id=str(raw.get("request_id") or ""),
    )
