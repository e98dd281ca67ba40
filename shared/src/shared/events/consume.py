"""The consumer side of an event: the `events.handle` task (dispatch to the inbox, retries with
backoff, the acknowledgement ledger), dead-letter writing, and the periodic prune tasks.
`register_event_tasks(app)` is called once by shared.events.celery_app.make_celery.

`events.handle` retries failures with capped exponential backoff and jitter; after
EVENTS_MAX_RETRIES the envelope is recorded as a dead letter (table + metric + error log) and
acknowledged, so a poison message cannot block the queue.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC

from celery import Celery

from shared.env import env_int
from shared.events.celery_config import retry_delay

logger = logging.getLogger("shared.events")


def register_event_tasks(app: Celery) -> None:
    @app.task(name="events.handle", bind=True, max_retries=None)
    def handle(self, envelope):
        return handle_envelope(self, envelope)

    @app.task(name="events.prune")
    def prune():
        from shared.events.prune import prune_events

        return prune_events()

    @app.task(name="platform.idempotency_prune")
    def idempotency_prune():
        from shared.idempotency import prune_idempotency_keys

        return prune_idempotency_keys()


def dead_letter(*, task: str, payload, error: str, attempts: int, event_id=None, type_: str = "") -> None:
    from django.utils import timezone

    from shared.events.metrics import DEAD_LETTERS
    from shared.events.models import DeadLetter

    DeadLetter.objects.create(
        event_id=event_id,
        type=type_ or task,
        task=task,
        payload=payload,
        error=error[:5000],
        attempts=attempts,
        created_at=timezone.now(),
    )
    DEAD_LETTERS.labels(type_ or task).inc()
    logger.error(
        "dead letter",
        extra={"task": task, "event_type": type_, "event_id": str(event_id or ""), "attempts": attempts, "error": error[:500]},
    )


def handle_envelope(task, envelope) -> str:
    from shared.events.catalogue import EventSchemaError
    from shared.events.inbox import dispatch
    from shared.events.metrics import CONSUME_LAG, FAILED, HANDLED, HANDLER_SECONDS
    from shared.requestid import reset_request_id, set_request_id

    raw = envelope if isinstance(envelope, dict) else {}
    type_ = str(raw.get("type", "?"))
    token = set_request_id(str(raw.get("request_id") or "") or task.request.id)
    started = time.perf_counter()
    if task.request.retries == 0:
        _observe_lag(CONSUME_LAG, type_, raw.get("occurred_at"))
    try:
        try:
            try:
                applied = dispatch(envelope)
            finally:
                HANDLER_SECONDS.labels(type_).observe(time.perf_counter() - started)
        except EventSchemaError as exc:  # permanent: retrying cannot help
            FAILED.labels(type_).inc()
            _give_up(task, raw, type_, f"EventSchemaError: {exc}")
            HANDLED.labels(type_, "dead").inc()
            _ledger(task, raw)
            return "dead"
        except Exception as exc:
            FAILED.labels(type_).inc()
            attempts = task.request.retries + 1
            if attempts > env_int("EVENTS_MAX_RETRIES", 5):
                _give_up(task, raw, type_, f"{type(exc).__name__}: {exc}")
                HANDLED.labels(type_, "dead").inc()
                _ledger(task, raw)
                return "dead"
            HANDLED.labels(type_, "retry").inc()
            logger.warning(
                "event handler failed; retrying",
                extra={
                    "event_type": type_,
                    "event_id": raw.get("id"),
                    "attempt": attempts,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            countdown = retry_delay(task.request.retries)
            _ledger(task, raw, until=time.time() + countdown)  # still alive: not yet due for redelivery
            raise task.retry(exc=exc, countdown=countdown) from None
        _ledger(task, raw)  # committed (or already in the inbox): settled for this consumer
        outcome = "applied" if applied else "duplicate"
        HANDLED.labels(type_, outcome).inc()
        logger.info("event %s", outcome, extra={"event_type": type_, "event_id": raw.get("id")})
        return outcome
    finally:
        reset_request_id(token)


def _ledger(task, raw: dict, *, until: float | None = None) -> None:
    """Tell the acknowledgement ledger (shared.events.ledger) this consumer settled the event, or,
    with `until`, that it retries it then. Runs after the handler's transaction committed."""
    from shared.events import ledger

    event_id, producer = raw.get("id"), raw.get("producer")
    if not event_id or not producer:
        return
    args = {"consumer": task.app.main, "producer": str(producer), "event_id": str(event_id)}
    if until is None:
        ledger.settle(task.app.conf.broker_url, **args)
    else:
        ledger.postpone(task.app.conf.broker_url, **args, until=until)


def _observe_lag(histogram, type_: str, occurred_at) -> None:
    from datetime import datetime

    try:
        at = datetime.fromisoformat(str(occurred_at).replace("Z", "+00:00"))
        histogram.labels(type_).observe(max(0.0, (datetime.now(UTC) - at).total_seconds()))
    except (TypeError, ValueError):
        pass


def _give_up(task, raw: dict, type_: str, error: str) -> None:
    import uuid

    try:
        event_id = uuid.UUID(str(raw.get("id")))
    except ValueError:
        event_id = None
    try:
        dead_letter(
            task=task.name,
            payload=raw or {"raw": str(task.request.args)[:2000]},
            error=error,
            attempts=task.request.retries + 1,
            event_id=event_id,
            type_=type_,
        )
    except Exception as exc:  # cannot record it (database down?): keep the message alive instead
        raise task.retry(exc=exc, countdown=retry_delay(task.request.retries)) from None
