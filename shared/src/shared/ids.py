"""64-bit, time-ordered ids (snowflake layout), safe with many replicas.

    | 41 bits: ms since EPOCH | 10 bits: worker | 12 bits: sequence within the ms |

Sorting by id sorts by creation time, so "newest first" is `ORDER BY id DESC` on the primary
key and a keyset cursor is just an id. 41 bits of milliseconds last until 2094.

The worker number must be unique among live processes. `SNOWFLAKE_WORKER_ID` pins it (k8s
StatefulSet ordinal, say); otherwise each process leases one from Redis (`SET NX` with a TTL,
renewed while it generates ids), so replicas started from one image never share a worker
number. A process re-leases after fork (gunicorn/celery preforking) because the generator is
keyed by pid. If the clock steps back, generation waits for it to catch up rather than reuse
a timestamp.

Without Redis: a process that holds a lease keeps generating ids while the lease is valid
(LEASE_SECONDS from its last renewal; renewal is tried every LEASE_SECONDS / 3 and a failure is
only logged), so a Redis outage of up to ~6 minutes does not stop writes. A process that has no
valid lease cannot get one and `next_id` raises `redis.ConnectionError` (answered as 503 with
Retry-After by shared.problems). Gunicorn workers lease at start (`lease_early`, for the
namespaces in settings.SNOWFLAKE_NAMESPACES), so a worker started before an outage has one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime

import redis

from shared import redis_clients

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
LEASE_SECONDS = 600
RENEW_MARGIN_SECONDS = 30  # stop using a lease this long before it would expire unrenewed
log = logging.getLogger("shared.ids")
# extend the lease only if it is still ours (it may have expired and been taken meanwhile)
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) and 1 or 0
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def timestamp_of(snowflake: int) -> datetime:
    """When an id was made (UTC, ms precision)."""
    return datetime.fromtimestamp(((snowflake >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS) / 1000, tz=UTC)


def lowest_id_at(moment: datetime) -> int:
    """The smallest id that can be made at `moment`: a keyset bound for "posts since"."""
    return max(0, int(moment.timestamp() * 1000) - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)


class SnowflakeGenerator:
    def __init__(self, worker_id: int, *, clock=_now_ms):
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker id must be 0..{MAX_WORKER}")
        self.worker_id = worker_id
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            now = self._clock()
            while now < self._last_ms:  # clock stepped back: never reuse a past millisecond
                time.sleep((self._last_ms - now) / 1000)
                now = self._clock()
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & MAX_SEQUENCE
                if self._sequence == 0:  # 4096 ids in this ms: wait for the next one
                    while now <= self._last_ms:
                        now = self._clock()
            else:
                self._sequence = 0
            self._last_ms = now
            return ((now - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (self.worker_id << SEQUENCE_BITS) | self._sequence


class RedisWorkerLease:
    """Leases a free worker number from Redis and keeps it while ids are being generated."""

    def __init__(self, redis_url: str, *, namespace: str):
        self._redis = redis_clients.client(redis_url)
        self._namespace = namespace
        self._token = f"{os.getpid()}-{os.urandom(6).hex()}"
        self.worker_id = self._acquire()
        self._renewed_at = time.monotonic()

    def _key(self, worker: int) -> str:
        return f"snowflake:{self._namespace}:worker:{worker}"

    def _acquire(self) -> int:
        start = self._redis.incr(f"snowflake:{self._namespace}:next") % (MAX_WORKER + 1)
        for offset in range(MAX_WORKER + 1):
            worker = (start + offset) % (MAX_WORKER + 1)
            if self._redis.set(self._key(worker), self._token, nx=True, ex=LEASE_SECONDS):
                return worker
        raise RuntimeError("no free snowflake worker id: more than 1024 live id generators")

    def renew_if_due(self) -> bool:
        """Renew when a third of the lease has passed. False when the lease can no longer be used:
        renewal failed until the lease (almost) expired, or another process holds the number now."""
        age = time.monotonic() - self._renewed_at
        if age <= LEASE_SECONDS / 3:
            return True
        try:
            ours = self._redis.eval(_RENEW, 1, self._key(self.worker_id), self._token, LEASE_SECONDS)
        except redis_clients.UNAVAILABLE as exc:
            usable = age < LEASE_SECONDS - RENEW_MARGIN_SECONDS
            log.warning(
                "snowflake lease renewal failed; %s",
                "still valid" if usable else "expired",
                extra={"worker": self.worker_id, "error": str(exc)[:200]},
            )
            return usable
        if not ours:
            log.warning("snowflake lease lost to another process", extra={"worker": self.worker_id})
            return False
        self._renewed_at = time.monotonic()
        return True


_state: dict[str, tuple[int, SnowflakeGenerator, RedisWorkerLease | None]] = {}
_state_lock = threading.Lock()


def next_id(*, namespace: str = "default", redis_url: str | None = None) -> int:
    """The next id for this process (worker number from SNOWFLAKE_WORKER_ID or a Redis lease).
    Raises redis.ConnectionError/TimeoutError when a lease is needed and Redis cannot be reached."""
    current = _state.get(namespace)
    if current is None or current[0] != os.getpid() or (current[2] is not None and not current[2].renew_if_due()):
        with _state_lock:
            current = _state.get(namespace)
            if current is None or current[0] != os.getpid() or (current[2] is not None and not current[2].renew_if_due()):
                pinned = os.environ.get("SNOWFLAKE_WORKER_ID")
                if pinned:
                    lease, worker = None, int(pinned)
                else:
                    if redis_url is None:
                        from django.conf import settings

                        redis_url = settings.REDIS_URL
                    lease = RedisWorkerLease(redis_url, namespace=namespace)
                    worker = lease.worker_id
                current = (os.getpid(), SnowflakeGenerator(worker), lease)
                _state[namespace] = current
    return current[1].next_id()


def lease_early(namespaces: list[str] | None = None) -> None:
    """Take this process's leases now (gunicorn post_worker_init) rather than at its first id, so a
    worker started while Redis is up can write through a later outage. Failure is only logged."""
    if namespaces is None:
        from django.conf import settings

        namespaces = list(getattr(settings, "SNOWFLAKE_NAMESPACES", []))
    for namespace in namespaces:
        try:
            next_id(namespace=namespace)
        except redis.RedisError as exc:
            log.warning(
                "snowflake lease not taken at start; retried at the first id",
                extra={"namespace": namespace, "error": str(exc)[:200]},
            )
