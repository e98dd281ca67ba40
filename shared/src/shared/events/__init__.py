"""The event backbone: envelope, catalogue, transactional outbox, relay, inbox, Celery config.

Producer: `publish("user.followed", {...})` inside the transaction that makes the change.
Relay: `manage.py events_relay` moves committed outbox rows to every consumer's Celery queue.
Consumer: `@handler("user.followed")` in an app's events.py; the service's Celery worker runs it
once per event id (inbox), with retries and a dead letter. See docs/events.md.
"""

from shared.events.catalogue import CATALOGUE, EventSchemaError, EventType, validate_data
from shared.events.envelope import Event, envelope_from, envelope_to

__all__ = [
    "CATALOGUE",
    "Event",
    "EventSchemaError",
    "EventType",
    "envelope_from",
    "envelope_to",
    "handler",
    "publish",
    "validate_data",
]


def publish(type_: str, data: dict, *, version: int | None = None):
    from shared.events.outbox import publish as _publish

    return _publish(type_, data, version=version)


def handler(type_: str, *, version: int = 1):
    from shared.events.inbox import handler as _handler

    return _handler(type_, version=version)
