"""kombu's Redis transport with one reused client per channel for its bookkeeping commands.

kombu's `Channel.conn_or_acquire()` builds a new `redis.Redis` on the channel's pool each time it
is not handed one: for the unacked-set pipeline of every message taken, for every ack and for every
sweep. Building a `redis.Redis` copies its response-callback tables, which profiled at 7–9 % of a
worker's CPU per event (docs/performance.md, "A post with a mention"). A client is only the pool
plus those tables (redis-py clients are safe to share between threads; every command and pipeline
takes its own connection from the pool), so this channel keeps one per pool and rebuilds it when
kombu replaces the pool (after a fork or a disconnect). Everything else is kombu's.

Selected by `broker_transport` in shared.events.celery_config; the URL (`redis://…`) is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: redis.Redis | None = None

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client:
            yield client
            return
        shared = self._shared_client
        pool = self.pool  # kombu's property: a new pool after _disconnect_pools()
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]  # kombu, untyped there
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
