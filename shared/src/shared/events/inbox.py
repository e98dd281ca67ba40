"""Consumer side: the handler registry and exactly-once application through the inbox."""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection, transaction

from shared.events.catalogue import EventSchemaError, event_type
from shared.events.celery_config import time_limits
from shared.events.envelope import Event, envelope_from
from shared.events.models import InboxEvent

Handler = Callable[[Event], None]
_HANDLERS: dict[tuple[str, int], list[Handler]] = {}


def handler(type_: str, *, version: int = 1) -> Callable[[Handler], Handler]:
    """Register `fn(event)` for an event type and version (in an app's events.py)."""
    event_type(type_)  # an unknown type is a typo: fail at import, not at the first message

    def register(fn: Handler) -> Handler:
        handlers = _HANDLERS.setdefault((type_, version), [])
        if fn not in handlers:
            handlers.append(fn)
        return fn

    return register


def handlers_for(type_: str, version: int) -> list[Handler]:
    return list(_HANDLERS.get((type_, version), ()))


def registered_types() -> set[str]:
    return {type_ for type_, _ in _HANDLERS}


def registered() -> set[tuple[str, int]]:
    """Every (type, version) this process has a handler for: its subscriptions (shared.events.subscriptions)."""
    return {key for key, fns in _HANDLERS.items() if fns}


def dispatch(raw: dict) -> bool:
    """Apply one envelope; True if it was applied now, False if it had been already.

    The inbox row and the handlers' writes share one transaction: either both happen or neither.
    Two workers holding the same event serialise on the inbox primary key; the second sees the
    first's committed row and does nothing.

    Every statement of the transaction is bounded by `statement_timeout` = the soft task time
    limit (SET LOCAL, in the inbox insert's round trip, so it holds behind PgBouncer's transaction
    pooling too): a query stuck in Postgres fails the handler, which is retried, where the worker's
    own soft limit cannot interrupt a call blocked in libpq (shared.events.celery_app.InlineTimeLimits).
    """
    event = envelope_from(raw)
    handlers = handlers_for(event.type, event.version)
    if not handlers:
        raise EventSchemaError(f"no handler for {event.type} v{event.version} in this service")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SET LOCAL statement_timeout = {int(time_limits()[0] * 1000)}; "
                f"INSERT INTO {InboxEvent._meta.db_table} (event_id, type, handled_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (event_id) DO NOTHING",
                [event.id, event.type],
            )
            if cursor.rowcount == 0:
                return False
        for fn in handlers:
            fn(event)
    return True
