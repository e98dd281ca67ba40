"""The Celery configuration every service runs with (`celery_config(service)`), and the timings
derived from it that the relay and the consumer task share. Plain functions of the environment:
no Celery app, no task, nothing that imports the relay or the pruner back.

Delivery guarantees come from the combination, so none of these is optional:

* JSON only (no pickle: a message is data, never code).
* `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged after its task
  finished; a worker killed mid-task leaves it unacknowledged and it is delivered again (the
  inbox makes the second delivery a no-op).
* `worker_prefetch_multiplier = 1`: a worker holds one message per process, so a crash strands
  at most that many and a slow handler does not hoard the queue.
* Time limits below the Redis visibility timeout: Redis re-delivers an unacknowledged message
  after `visibility_timeout`; a task allowed to run longer than that would run twice at once.
  Workers run the solo pool (the process table), where Celery enforces no limit:
  shared.events.celery_app.InlineTimeLimits does, and the event transaction runs with
  `statement_timeout` = the soft limit (shared.events.inbox).
* `ReliableTask` (every task's base, shared.events.celery_app): a retry that cannot be published
  (broker away) puts the message back instead of dropping it, as Celery would
  (`Reject(requeue=False)`).
* `events.handle` retries failures with capped exponential backoff and jitter (`retry_delay`);
  after EVENTS_MAX_RETRIES the envelope is recorded as a dead letter (shared.events.consume).
"""

from __future__ import annotations

import os
import random
from datetime import timedelta

from shared.env import env_float, env_int, env_str


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


def time_limits() -> tuple[int, int, int]:
    """(soft, hard) task time limits and the visibility timeout, in seconds; soft < hard < visibility."""
    visibility = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
    hard = env_int("CELERY_TASK_TIME_LIMIT", min(300, visibility // 2))
    soft = env_int("CELERY_TASK_SOFT_TIME_LIMIT", max(1, hard - max(1, hard // 10)))
    if not soft < hard < visibility:
        raise ValueError(f"need soft ({soft}s) < hard ({hard}s) time limit < visibility timeout ({visibility}s)")
    return soft, hard, visibility


def celery_config(service: str) -> dict:
    broker = env_str("CELERY_BROKER_URL", os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    soft, hard, visibility = time_limits()
    return {
        "broker_url": broker,
        # kombu's Redis transport, reusing one client for its per-message bookkeeping
        # (shared.events.transport); a rediss:// or sentinel URL keeps kombu's own transport
        **({"broker_transport": "shared.events.transport:Transport"} if broker.startswith("redis://") else {}),
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
