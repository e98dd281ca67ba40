"""How far behind the event path is: read on demand from Postgres and the broker Redis.

Used by the Prometheus collector every Celery worker serves (`BacklogCollector`, gauges computed at
scrape time) and by `manage.py events_status`. One service's view:

* producer side: its outbox — rows not yet relayed, the age of the oldest, the last relay time;
* consumer side: the acknowledgement ledger (shared.events.ledger) — events published to this
  service's queue and not yet settled, per producer, and the age of the oldest (handler lag);
* its Celery queue: messages waiting (every kombu priority list), and a count per task name over
  the first EVENTS_QUEUE_SCAN_LIMIT messages (the fan-out backlog is `feed.fanout_deliver` there);
* dead letters kept in its table, per type.

The worker exports the outbox gauges too (not only the relay): a relay that has stopped cannot
report that its outbox grows, its service's worker can.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from shared.env import env_int

logger = logging.getLogger("shared.events")

# kombu's Redis transport keeps one list per priority step: the queue's name for priority 0, and
# name + "\x06\x16" + step for the others (kombu.transport.redis, PRIORITY_STEPS / sep)
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
_TASK_HEADER = re.compile(rb'"task": ?"([^"]{1,200})"')


@dataclass
class OutboxState:
    producer: str
    unsent: int
    oldest_unsent_age: float  # seconds; 0 when nothing is waiting
    last_sent_at: float | None  # epoch seconds of the newest sent_at, None if nothing was ever sent


@dataclass
class PendingState:
    consumer: str
    producer: str
    pending: int
    oldest_pending_age: float


@dataclass
class QueueState:
    queue: str
    length: int
    tasks: dict[str, int] = field(default_factory=dict)  # over the first `scanned` messages
    scanned: int = 0


def queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def outbox_state(producer: str, using: str = "default") -> OutboxState:
    from django.db import connections

    from shared.events.models import OutboxEvent

    table = OutboxEvent._meta.db_table
    with connections[using].cursor() as cursor:
        # both served by the partial indexes (pending rows by seq, sent rows by sent_at); ages by the
        # database's clock, the one occurred_at and sent_at were written with
        cursor.execute(
            f"SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(occurred_at)), 0) FROM {table} WHERE sent_at IS NULL"
        )
        unsent, age = cursor.fetchone()
        cursor.execute(f"SELECT EXTRACT(EPOCH FROM max(sent_at)) FROM {table} WHERE sent_at IS NOT NULL")
        (last,) = cursor.fetchone()
    return OutboxState(
        producer=producer,
        unsent=int(unsent),
        oldest_unsent_age=max(0.0, float(age)),
        last_sent_at=float(last) if last is not None else None,
    )


def producers_for(consumer: str) -> list[str]:
    """The producers of the events this process's handlers declare (it runs as `consumer`)."""
    from shared.events.catalogue import CATALOGUE
    from shared.events.inbox import registered_types

    return sorted({CATALOGUE[t].producer for t in registered_types() if t in CATALOGUE})


def pending_states(client, consumer: str, *, now: float | None = None) -> list[PendingState]:
    from shared.events import ledger

    now = time.time() if now is None else now
    producers = producers_for(consumer)
    pipe = client.pipeline(transaction=False)
    for producer in producers:
        key = ledger.pending_key(consumer, producer)
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
    answers = pipe.execute()
    states = []
    for i, producer in enumerate(producers):
        count, oldest = answers[2 * i], answers[2 * i + 1]
        # a score in the future is a retry's due time (ledger.postpone): not late yet
        age = max(0.0, now - oldest[0][1]) if oldest else 0.0
        states.append(PendingState(consumer=consumer, producer=producer, pending=int(count), oldest_pending_age=age))
    return states


def queue_state(client, queue: str, *, scan_limit: int | None = None) -> QueueState:
    limit = env_int("EVENTS_QUEUE_SCAN_LIMIT", 2000) if scan_limit is None else scan_limit
    keys = queue_keys(queue)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    lengths = pipe.execute()
    tasks: Counter[str] = Counter()
    scanned = 0
    for key, length in zip(keys, lengths, strict=True):
        start = 0
        while start < length and scanned < limit:
            chunk = client.lrange(key, start, start + min(500, limit - scanned) - 1)
            if not chunk:
                break
            for raw in chunk:
                # the task name is in the message's headers (the body is base64): no JSON decoding
                found = _TASK_HEADER.search(raw)
                tasks[found.group(1).decode("utf-8", "replace") if found else "unknown"] += 1
            scanned += len(chunk)
            start += len(chunk)
    return QueueState(queue=queue, length=int(sum(lengths)), tasks=dict(tasks), scanned=scanned)


def dead_letter_counts(using: str = "default") -> dict[str, int]:
    from django.db import connections

    from shared.events.models import DeadLetter

    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT type, count(*) FROM {DeadLetter._meta.db_table} GROUP BY type")
        return {type_: int(n) for type_, n in cursor.fetchall()}


class BacklogCollector:
    """A prometheus_client custom collector: every scrape reads the service's backlog afresh
    (a few indexed queries and Redis commands). A source that cannot be read is reported by
    `events_backlog_up{source} 0` and its gauges are left out (no stale value)."""

    def __init__(self, service: str, broker_url: str, *, tasks: list[str] | None = None):
        self.service = service
        self.broker_url = broker_url
        self.tasks = sorted(tasks or [])  # task names shown even at 0 (the app's own tasks)

    def describe(self):
        return []  # computed at scrape time; nothing to check at registration

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from shared.events import ledger

        up = GaugeMetricFamily(
            "events_backlog_up",
            "1 if this process could read the backlog source at the "
            "last scrape (postgres: outbox, dead letters; redis: queue, "
            "ack ledger)",
            labels=["source"],
        )
        families = []
        try:
            outbox = outbox_state(self.service)
            dead = dead_letter_counts()
        except Exception as exc:
            logger.warning("backlog gauges: database not readable", extra={"error": f"{type(exc).__name__}: {exc}"})
            up.add_metric(["postgres"], 0)
        else:
            up.add_metric(["postgres"], 1)
            unsent = GaugeMetricFamily("events_outbox_unsent", "Outbox rows committed and not yet relayed", labels=["producer"])
            unsent.add_metric([self.service], outbox.unsent)
            age = GaugeMetricFamily(
                "events_outbox_oldest_unsent_age_seconds",
                "Age of the oldest outbox row not yet relayed (0: none waiting)",
                labels=["producer"],
            )
            age.add_metric([self.service], outbox.oldest_unsent_age)
            families += [unsent, age]
            if outbox.last_sent_at is not None:
                last = GaugeMetricFamily(
                    "events_outbox_last_sent_timestamp_seconds",
                    "When the relay last marked an outbox row sent (epoch seconds)",
                    labels=["producer"],
                )
                last.add_metric([self.service], outbox.last_sent_at)
                families.append(last)
            stored = GaugeMetricFamily(
                "events_dead_letters_stored",
                "Dead letters kept in this consumer's table, waiting for events_replay",
                labels=["consumer", "type"],
            )
            for type_, n in sorted(dead.items()):
                stored.add_metric([self.service, type_], n)
            total = GaugeMetricFamily("events_dead_letters_stored_all", "Dead letters kept, all types", labels=["consumer"])
            total.add_metric([self.service], sum(dead.values()))
            families += [stored, total]
        finally:
            from django.db import connections

            connections.close_all()  # each scrape runs in a new server thread: leave no connection behind
        try:
            client = ledger.client(self.broker_url)
            pending = pending_states(client, self.service)
            queue = queue_state(client, self.service)
        except Exception as exc:
            logger.warning("backlog gauges: broker not readable", extra={"error": f"{type(exc).__name__}: {exc}"})
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1)
            count = GaugeMetricFamily(
                "events_consumer_pending",
                "Events published to this consumer and not yet settled (ack ledger)",
                labels=["consumer", "producer"],
            )
            lag = GaugeMetricFamily(
                "events_consumer_oldest_pending_age_seconds",
                "Age of the oldest event published to this consumer and not yet settled (handler lag; 0: none)",
                labels=["consumer", "producer"],
            )
            for state in pending:
                count.add_metric([state.consumer, state.producer], state.pending)
                lag.add_metric([state.consumer, state.producer], state.oldest_pending_age)
            length = GaugeMetricFamily(
                "celery_queue_length", "Messages waiting in the Celery queue (all priorities)", labels=["queue"]
            )
            length.add_metric([queue.queue], queue.length)
            tasks = GaugeMetricFamily(
                "celery_queue_tasks",
                "Messages waiting in the queue by task name, over the "
                "first EVENTS_QUEUE_SCAN_LIMIT messages (fan-out backlog: "
                'task="feed.fanout_deliver")',
                labels=["queue", "task"],
            )
            for task, n in sorted({**dict.fromkeys(self.tasks, 0), **queue.tasks}.items()):
                tasks.add_metric([queue.queue, task], n)
            families += [count, lag, length, tasks]
        yield up
        yield from families
