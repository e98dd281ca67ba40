"""The outbox relay: committed outbox rows → every consumer's Celery queue.

Low latency: it LISTENs on the service's channel (publish() NOTIFYs at commit) and falls back
to a short poll, so an event leaves within milliseconds of its commit and a missed NOTIFY (relay
restarting) costs at most one poll interval. Safe with several replicas: each batch is claimed
with `SELECT … FOR UPDATE SKIP LOCKED`, published, and marked sent in the same transaction.
A crash after publishing but before the commit re-publishes that batch: at-least-once, which
the consumers' inbox turns into exactly-once. If the broker or the database is down, nothing is
marked sent and the relay retries with backoff.

Order: one relay publishes in commit order, but several relays and several worker processes
do not keep it. Consumers must not depend on the order of events.
"""

from __future__ import annotations

import logging
import select
import time

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from shared.events.catalogue import consumers_of
from shared.events.envelope import Event, envelope_to
from shared.events.metrics import PUBLISHED, RELAY_ERRORS, RELAY_LAG
from shared.events.models import OutboxEvent
from shared.events.outbox import notify_channel

logger = logging.getLogger("shared.events.relay")


class Relay:
    def __init__(self, app, *, batch_size: int = 200, poll_interval: float = 1.0):
        self.app = app
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.service = settings.SERVICE_NAME
        self._listen_conn = None
        self._stopping = False

    def relay_batch(self) -> int:
        """Publish one batch of pending events; returns how many were relayed."""
        with transaction.atomic():
            rows = list(OutboxEvent.objects.select_for_update(skip_locked=True)
                        .filter(sent_at__isnull=True).order_by("seq")[: self.batch_size])
            if not rows:
                return 0
            now = timezone.now()
            with self.app.producer_or_acquire() as producer:
                for row in rows:
                    envelope = envelope_to(Event(id=row.event_id, type=row.type, version=row.version,
                                                 occurred_at=row.occurred_at, producer=self.service,
                                                 data=row.data, request_id=row.request_id))
                    for consumer in consumers_of(row.type):
                        self.app.send_task("events.handle", args=[envelope], queue=consumer, producer=producer,
                                           headers={"request_id": row.request_id, "event_type": row.type})
                        PUBLISHED.labels(row.type, consumer).inc()
                    RELAY_LAG.labels(row.type).observe(max(0.0, (now - row.occurred_at).total_seconds()))
            OutboxEvent.objects.filter(seq__in=[r.seq for r in rows]).update(sent_at=timezone.now())
        return len(rows)

    def _listen(self):
        if self._listen_conn is None:
            import psycopg2

            db = settings.DATABASES["default"]
            conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                                    port=db["PORT"] or None, connect_timeout=3,
                                    application_name=f"{self.service}-relay-listen")
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'LISTEN "{notify_channel(self.service)}"')
            self._listen_conn = conn
        return self._listen_conn

    def _wait(self, timeout: float) -> None:
        try:
            conn = self._listen()
            if select.select([conn], [], [], timeout) != ([], [], []):
                conn.poll()
                conn.notifies.clear()
        except Exception:
            self._close_listen()
            time.sleep(timeout)

    def _close_listen(self) -> None:
        if self._listen_conn is not None:
            try:
                self._listen_conn.close()
            except Exception:
                pass
            self._listen_conn = None

    def stop(self, *args) -> None:
        self._stopping = True

    def run(self, *, once: bool = False) -> None:
        logger.info("relay started", extra={"channel": notify_channel(self.service)})
        backoff = 0.0
        while not self._stopping:
            try:
                self._listen()  # subscribe before reading, so no commit between the two is missed
                relayed = self.relay_batch()
                backoff = 0.0
            except Exception as exc:
                RELAY_ERRORS.inc()
                backoff = min(5.0, max(0.2, backoff * 2))
                logger.warning("relay cycle failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}",
                                                                       "retry_in_s": backoff})
                close_old_connections()
                connection.close()
                self._close_listen()
                time.sleep(backoff)
                continue
            if once and relayed < self.batch_size:
                return
            if relayed < self.batch_size:
                self._wait(self.poll_interval)
        self._close_listen()
        logger.info("relay stopped")
