"""The one way a process gets a Redis client: `redis_clients.client()` (or `client(url)`).

Every client it returns has
- bounded waits: a connect gives up after REDIS_CONNECT_TIMEOUT (default 0.25 s), a reply after
  REDIS_SOCKET_TIMEOUT (default 0.5 s; `bulk=True` for worker-side pipelines of thousands of keys:
  REDIS_BULK_SOCKET_TIMEOUT, default 5 s). A failed command is retried at most once, at once, and
  only on a connection error (a pooled socket the server closed, e.g. after a Redis restart); a
  timeout is never retried;
- a quick "down" answer: after a failed connect to an address, every connect to it in this process
  fails at once (`redis.ConnectionError`) for REDIS_DOWN_SECONDS (default 1 s), so a request that
  touches Redis several times pays for a dead Redis once, not per call; after that the next
  command tries again, which is how a client reconnects without a restart;
- health checks: a pooled connection idle for more than REDIS_HEALTH_CHECK_SECONDS (default 10 s)
  is PINGed before use, so a socket cut while idle is replaced instead of failing a command;
- fork safety: clients are kept per (process id, URL, profile), so a gunicorn or Celery prefork
  child never uses its parent's sockets (redis-py's pool checks the pid as well).

Django's cache backend (`CACHES`, shared/django_settings.py) uses the same connection class and
timeouts through `connection_options()`, and `shared.redis_clients.RedisCache` makes a cache that
cannot be reached behave as a cache miss (see that class).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.env import env_float

log = logging.getLogger("shared.redis")

CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 0.25)
SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.5)
BULK_SOCKET_TIMEOUT = env_float("REDIS_BULK_SOCKET_TIMEOUT", 5.0)
DOWN_SECONDS = env_float("REDIS_DOWN_SECONDS", 1.0)
HEALTH_CHECK_SECONDS = int(env_float("REDIS_HEALTH_CHECK_SECONDS", 10))
# what a 503 caused by an unreachable Redis tells the client to wait (shared.problems)
RETRY_AFTER_SECONDS = max(1, int(DOWN_SECONDS + 0.999))

UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)  # Redis cannot be reached or did not answer

_down_until: dict[tuple[str, int], float] = {}


class FastFailConnection(redis.Connection):
    """A TCP connection that, after a failed connect to its address, refuses to try again for
    DOWN_SECONDS (raising ConnectionError at once); the first connect after that tries for real."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True):
        if self._sock:
            return
        address = (self.host, self.port)
        until = _down_until.get(address, 0.0)
        if until and time.monotonic() < until:
            raise redis.ConnectionError(f"Redis at {self.host}:{self.port} is unreachable (retrying within {DOWN_SECONDS:g} s)")
        try:
            super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        except UNAVAILABLE:
            _down_until[address] = time.monotonic() + DOWN_SECONDS
            raise
        if until:
            _down_until.pop(address, None)
            log.info("redis reachable again", extra={"redis": f"{self.host}:{self.port}"})


def _retry() -> Retry:
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def connection_options(*, bulk: bool = False) -> dict[str, Any]:
    """Keyword arguments for a redis-py connection pool: the timeouts, retry and health checks above."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": BULK_SOCKET_TIMEOUT if bulk else SOCKET_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "retry": _retry(),
        "retry_on_timeout": False,
        "connection_class": FastFailConnection,
    }


_clients: dict[tuple[int, str, bool], redis.Redis] = {}
_lock = threading.Lock()


def client(url: str | None = None, *, bulk: bool = False) -> redis.Redis:
    """This process's client for `url` (default: settings.REDIS_URL). Thread-safe; one pool per
    process, URL and profile (`bulk`: the longer reply timeout, for worker-side pipelines)."""
    if url is None:
        from django.conf import settings

        url = settings.REDIS_URL
    key = (os.getpid(), url, bulk)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                options = connection_options(bulk=bulk)
                connection_class = options.pop("connection_class")
                retry = options.pop("retry")
                pool = redis.ConnectionPool.from_url(url, connection_class=connection_class, retry=retry, **options)
                found = _clients[key] = redis.Redis(connection_pool=pool)
    return found


def best_effort(what: str, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a cache update that may be skipped (the cached value expires or is rebuilt anyway):
    when Redis is away, log a warning and return None instead of raising. For `on_commit` hooks of
    requests whose data is already committed to Postgres."""
    try:
        return action(*args, **kwargs)
    except UNAVAILABLE as exc:
        log.warning("redis unavailable; %s skipped", what, extra={"error": str(exc)[:200]})
        return None


def is_unavailable(exc: BaseException) -> bool:
    """Whether an exception means Redis could not be reached (or did not answer in time)."""
    return isinstance(exc, UNAVAILABLE)


class _ReusedClients(RedisCacheClient):
    """Django's cache client makes a new redis.Redis (response callbacks, dicts) around its pool on
    every cache call; this one makes it once per pool (about 6 % of a feed read's CPU)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, redis.Redis] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        found = self._clients.get(id(pool))
        if found is None or found.connection_pool is not pool:
            found = self._clients[id(pool)] = self._client(connection_pool=pool)
        return found


class RedisCache(DjangoRedisCache):
    """Django's Redis cache, failing open: when Redis cannot be reached a read is a miss (the caller
    computes the value from Postgres), and a write or delete is skipped with a warning. What a skipped
    write costs: nothing (the next read fills it). A skipped delete can leave an entry stale until it
    expires (its TIMEOUT); callers that cannot accept that must not rely on the cache for freshness.
    `incr`/`decr`/`touch`/`clear` still raise: their callers decide.

    DRF's throttles keep their history in this cache, so they fail open too: with Redis away a
    throttled endpoint is not throttled (a login is still checked against its password)."""

    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = _ReusedClients

    def _skip(self, operation: str, exc: Exception) -> None:
        log.warning("cache unavailable; %s skipped", operation, extra={"error": str(exc)[:200]})

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version)
        except UNAVAILABLE as exc:
            self._skip("get", exc)
            return default

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version)
        except UNAVAILABLE as exc:
            self._skip("get_many", exc)
            return {}

    def has_key(self, key, version=None):
        try:
            return super().has_key(key, version)
        except UNAVAILABLE as exc:
            self._skip("has_key", exc)
            return False

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set(key, value, timeout, version)
        except UNAVAILABLE as exc:
            self._skip("set", exc)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().add(key, value, timeout, version)
        except UNAVAILABLE as exc:
            self._skip("add", exc)
            return False

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set_many(data, timeout, version)
        except UNAVAILABLE as exc:
            self._skip("set_many", exc)
            return list(data)

    def delete(self, key, version=None):
        try:
            return super().delete(key, version)
        except UNAVAILABLE as exc:
            self._skip("delete", exc)
            return False

    def delete_many(self, keys, version=None):
        try:
            return super().delete_many(keys, version)
        except UNAVAILABLE as exc:
            self._skip("delete_many", exc)
