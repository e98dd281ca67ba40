"""`make_celery(service)`: each service's Celery app, and its worker's lifecycle (signal handlers:
metrics endpoint, subscription registration, database connections, tracing).

The configuration is shared.events.celery_config's (see its docstring for the delivery
guarantees); the tasks and dead-letter writing are shared.events.consume's. The names below
from both stay importable from here.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init, worker_ready, worker_shutdown

from shared.env import env_int
from shared.events.celery_config import celery_config, redeliver_after, restore_interval, retry_delay
from shared.events.consume import dead_letter, handle_envelope, register_event_tasks
from shared.events.exposition import prepare_multiprocess_dir, remove_owned_dir, start_metrics_server

__all__ = [
    "ReliableTask",
    "celery_config",
    "dead_letter",
    "handle_envelope",
    "make_celery",
    "redeliver_after",
    "restore_interval",
    "retry_delay",
]

logger = logging.getLogger("shared.events")


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
    register_event_tasks(app)
    app.autodiscover_tasks()  # each installed app's tasks.py
    return app


class InlineTimeLimits:
    """The task time limits for a pool that runs tasks in the worker's own main thread (`--pool
    solo`, the process table's), which Celery enforces only in prefork children:

    * soft (`task_soft_time_limit`): a SIGALRM armed for each task raises `SoftTimeLimitExceeded`
      in it, as prefork's soft limit does (the event task retries it with backoff). Python code
      only: a call blocked in C (a query in libpq) sees it when it returns, which is why the event
      transaction also runs with `statement_timeout` = the soft limit (shared.events.inbox);
    * hard (`task_time_limit`): a thread that sleeps until the running task's hard deadline, and
      if that task is still running then, logs it and ends the process with status 70, as prefork
      kills a child: the message stays unacknowledged and comes back after the visibility timeout
      (the inbox keeps it once); the supervisor (make run, compose, Kubernetes) restarts the worker.

    Per task: two setitimer calls; the thread wakes at most once per hard limit while tasks run
    and not at all while the worker is idle."""

    EXIT_STATUS = 70

    def __init__(self, soft: float, hard: float):
        self.soft, self.hard = soft, hard
        self.current: tuple[str, float] | None = None  # (task id, hard deadline) of the running task
        self._busy = threading.Event()
        signal.signal(signal.SIGALRM, self._on_alarm)
        threading.Thread(target=self._watch, name="task-hard-limit", daemon=True).start()

    def started(self, task_id: str) -> None:
        self.current = (task_id, time.monotonic() + self.hard)
        signal.setitimer(signal.ITIMER_REAL, self.soft)
        if not self._busy.is_set():
            self._busy.set()

    def finished(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.current = None

    def _on_alarm(self, signum, frame) -> None:
        if self.current is not None:  # (an alarm already delivered when the task finished is ignored)
            raise SoftTimeLimitExceeded(f"soft time limit ({self.soft:g} s) exceeded")

    def _watch(self) -> None:
        while True:
            self._busy.wait()
            current = self.current
            if current is None:  # idle: sleep until the next task starts
                self._busy.clear()
                if self.current is not None:  # started between the read and the clear
                    self._busy.set()
                continue
            task_id, deadline = current
            remaining = deadline - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
                continue
            if self.current is current:
                logger.critical(
                    "task exceeded the hard time limit; the worker exits and its message is delivered again",
                    extra={"task_id": task_id, "hard_limit_s": self.hard},
                )
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(self.EXIT_STATUS)


_inline_limits: InlineTimeLimits | None = None
_worker_pid: int | None = None


@worker_init.connect(weak=False)
def _remember_worker_pid(**_) -> None:
    global _worker_pid
    _worker_pid = os.getpid()


@worker_process_init.connect(weak=False)
def _time_limits_for_inline_pool(sender=None, **_) -> None:
    """The solo pool sends worker_process_init from the worker's own process (prefork: from each
    child): only there do the limits need enforcing here."""
    global _inline_limits
    if os.getpid() != _worker_pid or threading.current_thread() is not threading.main_thread() or _inline_limits:
        return
    from celery import current_app

    conf = current_app.conf
    if conf.task_time_limit and conf.task_soft_time_limit:
        _inline_limits = InlineTimeLimits(float(conf.task_soft_time_limit), float(conf.task_time_limit))


@task_prerun.connect(weak=False)
def _arm_time_limits(task_id=None, task=None, **_) -> None:
    if _inline_limits is not None and not getattr(task.request, "is_eager", False):
        _inline_limits.started(str(task_id))


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
    if _inline_limits is not None:  # first: the soft limit's alarm must not fire in what follows
        _inline_limits.finished()
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


@worker_shutdown.connect(weak=False)
def _remove_metrics_dir(**_) -> None:
    remove_owned_dir()
