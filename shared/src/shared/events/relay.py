"""The outbox relay: committed outbox rows → every consumer's Celery queue.

Low latency at little idle cost: it LISTENs on the service's channel (publish() NOTIFYs at commit)
and sleeps in select() on that connection until a NOTIFY arrives, so an event leaves within
milliseconds of its commit. A NOTIFY cannot be missed while the LISTEN connection lives (the relay
subscribes before each read of the outbox); when that connection breaks (Postgres restarted), the
relay reconnects within a second and reads the outbox again. The fallback poll
(EVENTS_RELAY_POLL_SECONDS, 30 s) only bounds the delay of a row committed without a NOTIFY
(written by hand) and of the ledger's redelivery check; SIGTERM wakes the sleep at once.
Safe with several replicas: each batch is claimed and marked sent with one
`UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED) … RETURNING` and published in the same
transaction, so a failed publish leaves it pending.
A crash after publishing but before the commit re-publishes that batch: at-least-once, which
the consumers' inbox turns into exactly-once. If the broker or the database is down, nothing is
marked sent and the relay retries with backoff.

Routing (shared.events.subscriptions): consumers register what they handle in the broker Redis;
the relay reads that registry at every batch, after claiming the rows, so an event committed after
a consumer registered reaches it, with no restart and no change to the producer.

Acknowledgement ledger (shared.events.ledger): before publishing, the relay records each event
as pending for each consumer in the broker Redis; consumers remove it once settled. Every
`redeliver_check` seconds the relay re-publishes, from its outbox, what a consumer has left
pending for longer than EVENTS_REDELIVER_AFTER_SECONDS: a message lost between kombu's BRPOP and
its unacked bookkeeping (or in any other way) is delivered again, and the inbox keeps it once.
A pending event older than EVENTS_LOST_AFTER_SECONDS whose message is neither in the consumer's
queue nor unacknowledged (ledger.in_transit) is lost, and is re-published at that check already.

Order: one relay publishes in commit order, but several relays and several worker processes
do not keep it. Consumers must not depend on the order of events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import time
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from shared import tracing
from shared.env import env_float, env_int
from shared.events import ledger, subscriptions
from shared.events.catalogue import CATALOGUE
from shared.events.celery_config import redeliver_after
from shared.events.envelope import Event, envelope_to
from shared.events.metrics import PUBLISHED, REDELIVERED, RELAY_ERRORS, RELAY_LAG
from shared.events.models import OutboxEvent
from shared.events.outbox import notify_channel

logger = logging.getLogger("shared.events.relay")


class _Row(NamedTuple):
    """An outbox row as the relay reads it (OutboxEvent's columns but sent_at)."""

    seq: int
    event_id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    data: Any
    request_id: str
    traceparent: str


class Relay:
    def __init__(self, app, *, batch_size: int = 200, poll_interval: float = 30.0):
        self.app = app
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.service = settings.SERVICE_NAME
        self._listen_conn = None
        self._stopping = False
        # stop() (a signal handler) writes here: the relay sleeps up to a poll interval in select(),
        # which Python resumes after a handler runs, so the flag alone would wait out the interval
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.redeliver_after = redeliver_after()
        # a message nowhere in the broker for this long was lost in transit: no need to wait out the
        # grace period (sized for a dead worker's unacked messages); looked for only when the
        # consumer's queue and the unacked hash hold at most EVENTS_LOST_SCAN_LIMIT messages
        self.lost_after = env_float("EVENTS_LOST_AFTER_SECONDS", 20.0)
        self.lost_scan_limit = env_int("EVENTS_LOST_SCAN_LIMIT", 1000)
        self.redeliver_check = max(0.2, min(30.0, self.redeliver_after / 4, self.lost_after / 4))
        self._next_redeliver = 0.0
        self.types = sorted(t for t, spec in CATALOGUE.items() if spec.producer == self.service)

    def _ledger(self):
        return ledger.client(self.app.conf.broker_url, bulk=True)

    def _envelope(self, row: _Row | OutboxEvent) -> dict:
        return envelope_to(
            Event(
                id=row.event_id,
                type=row.type,
                version=row.version,
                occurred_at=row.occurred_at,
                producer=self.service,
                data=row.data,
                request_id=row.request_id,
            )
        )

    def _send(self, producer, envelope: dict, consumer: str, row: _Row | OutboxEvent) -> None:
        # argsrepr given: Celery would otherwise saferepr() every envelope (~10% of the relay's CPU).
        # Published in the trace the event was written in (shared.tracing; no-op when tracing is off).
        # declare=[]: the message goes to the consumer's queue by name (Celery's anonymous direct
        # exchange), which a Redis broker needs no declaration for; Celery would otherwise copy and
        # bind a Queue per message to look it up in kombu's declared cache. retry=False: the
        # publish only buffers (_producer's batch); a broker error at the flush rolls the batch
        # back and the relay's loop retries it with backoff.
        with tracing.remote_parent(row.traceparent):
            self.app.send_task(
                "events.handle",
                args=[envelope],
                queue=consumer,
                producer=producer,
                argsrepr=f"[{{'id': '{row.event_id}', 'type': '{row.type}'}}]",
                headers={"request_id": row.request_id, "event_type": row.type},
                declare=[],
                retry=False,
            )

    @contextlib.contextmanager
    def _producer(self):
        """A producer whose publishes are buffered and sent as one Redis pipeline when the block
        ends (kombu's Producer.batch; one LPUSH round trip per message and consumer made the relay
        the busiest process of the event path). An error, at publish or at the flush, propagates:
        the outbox transaction rolls back and nothing is marked sent."""
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=4 * self.batch_size + 16):
            yield producer

    def _claim(self) -> list[_Row]:
        """The next batch of pending rows, marked sent and locked until this transaction ends
        (other relays skip them). Marked before they are published: it is one transaction, so a
        failed publish rolls the mark back with it, and a crash before the commit leaves them
        pending. One statement through the cursor: the ORM's query building and model instances
        were a sixth of the relay's CPU per event, and a separate UPDATE one more round trip."""
        table = OutboxEvent._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH claimed AS (SELECT seq FROM {table} WHERE sent_at IS NULL ORDER BY seq LIMIT %s "
                f"FOR UPDATE SKIP LOCKED) UPDATE {table} AS o SET sent_at = %s FROM claimed WHERE o.seq = claimed.seq "
                f"RETURNING {', '.join('o.' + f for f in _Row._fields)}",
                [self.batch_size, timezone.now()],
            )
            rows = sorted((_Row(*r) for r in cursor.fetchall()), key=lambda r: r.seq)  # RETURNING keeps no order
        # jsonb arrives as text (Django's psycopg2 backend leaves decoding to JSONField)
        return [r._replace(data=json.loads(r.data)) if isinstance(r.data, str) else r for r in rows]

    def relay_batch(self) -> int:
        """Publish one batch of pending events; returns how many were relayed."""
        with transaction.atomic():
            rows = self._claim()
            if not rows:
                return 0
            now = timezone.now()
            # the consumers registered now (read after the rows were claimed: whoever registered before
            # an event's commit is in it); ledger first: an event is pending for a consumer before it
            # can reach (and be settled by) it
            routes = subscriptions.read(self._ledger())
            targets = {row.seq: routes.consumers(row.type, row.version) for row in rows}
            pending: dict[str, dict[str, float]] = {}
            stamp = ledger.now()
            for row in rows:
                for consumer in targets[row.seq]:
                    pending.setdefault(consumer, {})[str(row.event_id)] = stamp
            if pending:
                pipe = self._ledger().pipeline(transaction=False)
                for consumer, members in pending.items():
                    pipe.zadd(ledger.pending_key(consumer, self.service), members)
                pipe.execute()
            with self._producer() as producer:
                for row in rows:
                    envelope = self._envelope(row)
                    for consumer in targets[row.seq]:
                        self._send(producer, envelope, consumer, row)
                        PUBLISHED.labels(row.type, consumer).inc()
                    RELAY_LAG.labels(row.type).observe(max(0.0, (now - row.occurred_at).total_seconds()))
        return len(rows)

    def redeliver(self) -> int:
        """Publish again every event a consumer has left pending past the grace period; returns how many."""
        client = self._ledger()
        routes = subscriptions.read(client)
        total = 0
        for consumer in routes.consumers_of_types(self.types):
            key = ledger.pending_key(consumer, self.service)
            now = ledger.now()
            ids = [
                i.decode() for i in client.zrangebyscore(key, "-inf", now - self.redeliver_after, start=0, num=self.batch_size)
            ]
            lost = self._lost(client, consumer, key, now, exclude=set(ids))
            ids += lost
            if not ids:
                continue
            rows = {str(r.event_id): r for r in OutboxEvent.objects.filter(event_id__in=ids)}
            missing = [i for i in ids if i not in rows]
            if missing:  # nothing can publish them again (cannot happen unless the outbox was emptied by hand)
                client.zrem(key, *missing)
                logger.error(
                    "pending events not in the outbox; dropped from the ack ledger",
                    extra={"consumer": consumer, "event_ids": missing[:20], "count": len(missing)},
                )
            unsubscribed = [i for i, r in rows.items() if not routes.subscribes(consumer, r.type, r.version)]
            if unsubscribed:  # an operator removed that subscription: its backlog is dropped
                client.zrem(key, *unsubscribed)
                logger.warning(
                    "pending events of a removed subscription dropped from the ack ledger",
                    extra={"consumer": consumer, "event_ids": unsubscribed[:20], "count": len(unsubscribed)},
                )
                rows = {i: r for i, r in rows.items() if i not in unsubscribed}
            if not rows:
                continue
            with self._producer() as producer:
                for row in rows.values():
                    self._send(producer, self._envelope(row), consumer, row)
                    REDELIVERED.labels(row.type, consumer).inc()
            # the grace period starts again; XX: not re-added if the consumer settled it meanwhile
            client.zadd(key, dict.fromkeys(rows, ledger.now()), xx=True)
            total += len(rows)
            logger.warning(
                "events redelivered: not acknowledged within the grace period",
                extra={
                    "consumer": consumer,
                    "count": len(rows),
                    "grace_s": self.redeliver_after,
                    "lost_in_transit": len([i for i in lost if i in rows]),
                    "event_ids": list(rows)[:20],
                },
            )
        return total

    def _lost(self, client, consumer: str, key: str, now: float, *, exclude: set[str]) -> list[str]:
        """Ids pending for `consumer` longer than lost_after whose message is nowhere in the broker."""
        quiet = [i.decode() for i in client.zrangebyscore(key, "-inf", now - self.lost_after, start=0, num=self.batch_size)]
        quiet = [i for i in quiet if i not in exclude]
        if not quiet:
            return []
        unacked_key = self.app.conf.broker_transport_options.get("unacked_key", "unacked")
        present = ledger.in_transit(client, consumer, unacked_key=unacked_key, limit=self.lost_scan_limit)
        if present is None:  # too many messages to look through: the grace period covers them
            return []
        # settled meanwhile (ZREM after the scan): the XX ZADD below will not re-add it, and a
        # redelivery is an inbox hit
        return [i for i in quiet if i not in present]

    def _maybe_redeliver(self) -> None:
        if time.monotonic() >= self._next_redeliver:
            self.redeliver()
            self._next_redeliver = time.monotonic() + self.redeliver_check

    def _listen(self):
        if self._listen_conn is None:
            import psycopg2

            db = settings.DATABASES["default"]
            conn = psycopg2.connect(
                dbname=db["NAME"],
                user=db["USER"],
                password=db["PASSWORD"],
                host=db["HOST"],
                port=db["PORT"] or None,
                connect_timeout=3,
                application_name=f"{self.service}-relay-listen",
                # the relay sleeps on this socket for up to a poll interval: a peer that vanished
                # without closing it (host gone, network cut) is found by TCP keepalive instead
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'LISTEN "{notify_channel(self.service)}"')
            self._listen_conn = conn
        return self._listen_conn

    def _wait(self, timeout: float) -> None:
        try:
            conn = self._listen()
            readable, _, _ = select.select([conn, self._wake_r], [], [], timeout)
            if conn in readable:
                conn.poll()
                conn.notifies.clear()
        except Exception:  # the LISTEN connection broke: reconnect and read the outbox again soon
            self._close_listen()
            time.sleep(min(timeout, 0.5))

    def _close_listen(self) -> None:
        if self._listen_conn is not None:
            try:
                self._listen_conn.close()
            except Exception:
                pass
            self._listen_conn = None

    def stop(self, *args) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # the pipe is full: a wake-up is already pending
            os.write(self._wake_w, b"x")

    def run(self, *, once: bool = False) -> None:
        logger.info("relay started", extra={"channel": notify_channel(self.service)})
        backoff = 0.0
        while not self._stopping:
            try:
                self._listen()  # subscribe before reading, so no commit between the two is missed
                relayed = self.relay_batch()
                self._maybe_redeliver()
                backoff = 0.0
            except Exception as exc:
                RELAY_ERRORS.inc()
                backoff = min(5.0, max(0.2, backoff * 2))
                logger.warning(
                    "relay cycle failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff}
                )
                close_old_connections()
                connection.close()
                self._close_listen()
                time.sleep(backoff)
                continue
            if once and relayed < self.batch_size:
                return
            if relayed < self.batch_size:
                self._wait(min(self.poll_interval, max(0.05, self._next_redeliver - time.monotonic())))
        self._close_listen()
        logger.info("relay stopped")
