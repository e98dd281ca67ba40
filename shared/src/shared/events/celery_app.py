"""`make_celery(service)`: the one Celery configuration every service runs with.

Delivery guarantees come from the combination, so none of these is optional:

* JSON only (no pickle: a message is data, never code).
* `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged after its task
  finished; a worker killed mid-task leaves it unacknowledged and it is delivered again (the
  inbox makes the second delivery a no-op).
* `worker_prefetch_multiplier = 1`: a worker holds one message per process, so a crash strands
  at most that many and a slow handler does not hoard the queue.
* Time limits below the Redis visibility timeout: Redis re-delivers an unacknowledged message
  after `visibility_timeout`; a task allowed to run longer than that would run twice at once.
* `ReliableTask` (every task's base): a retry that cannot be published (broker away) puts the
  message back instead of dropping it, as Celery would (`Reject(requeue=False)`).
* `events.handle` retries failures with capped exponential backoff and jitter; after
  EVENTS_MAX_RETRIES the envelope is recorded as a dead letter (table + metric + error log) and
  acknowledged, so a poison message cannot block the queue.
"""

from __future__ import annotations

import logging
import os
import random
import time
from datetime import UTC, timedelta
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import task_postrun, worker_init, worker_process_init, worker_ready, worker_shutdown

from shared.env import env_float, env_int, env_str
from shared.events.exposition import prepare_multiprocess_dir, remove_owned_dir, start_metrics_server

logger = logging.getLogger("shared.events")


def retry_delay(retries: int) -> float:
    """Capped exponential backoff with full jitter: retries of many messages do not arrive in waves."""
    base = env_float("EVENTS_RETRY_BACKOFF", 1.0)
    cap = env_float("EVENTS_RETRY_BACKOFF_MAX", 120.0)
    return random.uniform(base / 2, min(cap, base * 2**retries))


def restore_interval(visibility: int) -> int:
    """Seconds between sweeps for unacknowledged messages whose visibility timeout has passed."""
    return max(1, min(10, visibility // 10))


def redeliver_after() -> float:
    """Seconds an event may stay unacknowledged in the ledger before its relay publishes it again
    (shared.events.ledger). Default: past anything a live delivery can take, i.e. the visibility
    timeout (a dead worker's message comes back by then) + the hard time limit + a minute."""
    visibility = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
    hard = env_int("CELERY_TASK_TIME_LIMIT", min(300, visibility // 2))
    return env_float("EVENTS_REDELIVER_AFTER_SECONDS", float(visibility + hard + 60))


def celery_config(service: str) -> dict:
    broker = env_str("CELERY_BROKER_URL", os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    visibility = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
    hard = env_int("CELERY_TASK_TIME_LIMIT", min(300, visibility // 2))
    soft = env_int("CELERY_TASK_SOFT_TIME_LIMIT", max(1, hard - max(1, hard // 10)))
    if not soft < hard < visibility:
        raise ValueError(f"need soft ({soft}s) < hard ({hard}s) time limit < visibility timeout ({visibility}s)")
    return {
        "broker_url": broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # Messages a dead worker held (SIGKILL, or acks lost with the connection) come back only
            # when some worker sweeps the unacked set. kombu's default sweeps every 10 s × throttle 10
            # = 100 s, whatever the visibility timeout: a crash cost ~2 min of stalled events. Sweep
            # every visibility/10 (1..10 s), each time: one ZRANGE on a small sorted set.
            "unacked_restore_interval": restore_interval(visibility),
            "unacked_restore_throttle": 1,
            # the sweep holds a Redis lock; a worker killed while holding it (more likely now that it
            # sweeps often) blocked every sweep for kombu's default 300 s. A sweep takes milliseconds.
            "unacked_mutex_expire": 3 * restore_interval(visibility),
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "health_check_interval": 10,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": hard,
        "task_soft_time_limit": soft,
        "task_default_queue": service,
        "task_create_missing_queues": True,
        # the relay must find out quickly that the broker is gone (it keeps the rows and retries)
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.4, "interval_max": 1.0},
        "worker_hijack_root_logger": False,  # Django's LOGGING (JSON lines with request ids) stays in charge
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "events-prune": {
                "task": "events.prune",
                "schedule": timedelta(minutes=env_int("EVENTS_PRUNE_MINUTES", 60)),
                "options": {"queue": service},
            },
            "idempotency-prune": {
                "task": "platform.idempotency_prune",
                "schedule": timedelta(minutes=env_int("IDEMPOTENCY_PRUNE_MINUTES", 60)),
                "options": {"queue": service},
            },
        },
    }


class ReliableTask(Task):
    """Every task's base class (`make_celery`). Celery's `Task.retry` publishes the retry as a new
    message and, when that publish fails (the broker is away: the usual reason a task fails during
    a Redis outage), raises `Reject(requeue=False)`: the worker removes the message from the
    broker, and the task is gone for good (a `feed.fanout_deliver` page: followers never get the
    post). Here the message is rejected *with* requeue: it goes back on its queue once the broker
    answers, or, if the broker cannot even take that, stays unacknowledged until the visibility
    timeout returns it. Task handlers are idempotent (the inbox, ON CONFLICT), so a second run is
    harmless."""

    def retry(self, *args, **kwargs):
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            if exc.requeue:
                raise
            logger.warning(
                "task retry could not be published; the message is requeued instead of dropped",
                extra={"task": self.name, "task_id": self.request.id, "error": f"{type(exc.reason).__name__}: {exc.reason}"},
            )
            raise Reject(exc.reason, requeue=True) from None


def make_celery(service: str) -> Celery:
    """The service's Celery app: `app = make_celery("notifications")` in <service>_service/celery.py."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{service}_service.settings")
    prepare_multiprocess_dir(service)  # before anything imports prometheus_client
    base: Any = ReliableTask  # (Celery's stubs make the app generic in its task class; the app's type stays Celery)
    app = Celery(service, task_cls=base)
    app.conf.update(celery_config(service))
    # Celery's Django fixup closes every database connection before and after every task unless this
    # is set: a new Postgres connection per event was more than half of a worker's time (py-spy).
    # Connections are reused instead; _recycle_db_connections closes broken or old ones.
    app.conf.update({"CELERY_DB_REUSE_MAX": env_int("CELERY_DB_REUSE_MAX", 100_000)})
    _register_event_tasks(app)
    app.autodiscover_tasks()  # each installed app's tasks.py
    return app


@worker_init.connect(weak=False)
def _serve_worker_metrics(sender=None, **_) -> None:
    """In the worker's parent process (before the pool forks): /metrics on METRICS_PORT, summing
    the children's samples (multiprocess mode), plus the service's backlog gauges read at scrape
    time (shared.events.backlog: outbox, ack ledger, queue, dead letters)."""
    from shared.events.backlog import BacklogCollector

    app = getattr(sender, "app", None)
    collectors: tuple[BacklogCollector, ...] = ()
    if app is not None:
        tasks = [name for name in app.tasks if not name.startswith("celery.")]
        collectors = (BacklogCollector(app.main, app.conf.broker_url, tasks=tasks),)
    try:
        start_metrics_server(collectors=collectors)
    except OSError as exc:  # port taken: the worker still works, without its metrics endpoint
        logger.error("metrics server not started", extra={"error": str(exc)})


@worker_ready.connect(weak=False)
def _register_subscriptions(sender=None, **_) -> None:
    """The consumer registers what its handlers declare (shared.events.subscriptions), so producers'
    relays route those events to its queue. Retried until the broker answers: a worker that
    consumes without being registered would receive nothing new."""
    from shared.events.subscriptions import register_service

    app = getattr(sender, "app", None)
    if app is None:
        return
    for attempt in range(30):
        try:
            register_service(app.conf.broker_url, app.main)
            return
        except Exception as exc:
            logger.warning(
                "event subscriptions not registered; retrying",
                extra={"error": f"{type(exc).__name__}: {exc}", "attempt": attempt + 1},
            )
            time.sleep(1.0)
    logger.error("event subscriptions not registered", extra={"consumer": app.main})


@worker_process_init.connect(weak=False)
def _persistent_db_connections(**_) -> None:
    """In each pool process: keep database connections for CELERY_DB_CONN_MAX_AGE seconds (300).
    No health-check query (SELECT 1) before each task: a connection that broke makes its task fail
    and retry, and _recycle_db_connections replaces it right after that task."""
    from django.db import connections

    for conn in connections.all():
        conn.settings_dict["CONN_MAX_AGE"] = env_int("CELERY_DB_CONN_MAX_AGE", 300)
        conn.settings_dict["CONN_HEALTH_CHECKS"] = False


@worker_process_init.connect(weak=False)
def _start_tracing(**_) -> None:
    """In each pool process, after the fork: tracing (shared.tracing; nothing unless
    OTEL_TRACES_EXPORTER is set). The consumer's task span continues the relay's publish span."""
    from django.conf import settings

    from shared import tracing

    tracing.setup(settings.SERVICE_NAME, celery=True)


@task_postrun.connect(weak=False)
def _recycle_db_connections(task=None, **_) -> None:
    """After each task, what Django does after each request: close a connection that had errors and
    no longer answers (database restarted), is in a bad state, or is older than its max age.
    Not for eager tasks (run inline by the caller, possibly inside its transaction)."""
    from django.db import connections

    if task is None or getattr(task.request, "is_eager", False):
        return
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


@worker_shutdown.connect(weak=False)
def _remove_metrics_dir(**_) -> None:
    remove_owned_dir()


def _register_event_tasks(app: Celery) -> None:
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
