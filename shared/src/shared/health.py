"""`/health/live` (the process answers; checks nothing else) and `/health/ready` (DB and Redis
reachable with short timeouts; fails as soon as the process starts draining)."""

from __future__ import annotations

import threading

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.urls import path

_draining = threading.Event()


def start_draining() -> None:
    """Called on SIGTERM (gunicorn worker hook): readiness fails so load balancers stop sending."""
    _draining.set()


def is_draining() -> bool:
    return _draining.is_set()


def _check_db() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 1000; SELECT 1")
        return None
    except Exception as exc:  # report, never raise: this is a probe
        return f"{type(exc).__name__}: {exc}".strip()[:200]


_redis_clients: dict[str, redis.Redis] = {}


def _check_redis() -> str | None:
    url = settings.REDIS_URL
    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        client.ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def live(request):
    return JsonResponse({"status": "ok"})


def ready(request):
    checks = {"database": _check_db(), "redis": _check_redis()}
    if is_draining():
        checks["draining"] = "shutting down"
    failed = {name: error for name, error in checks.items() if error}
    body = {"status": "unavailable" if failed else "ok", "checks": {k: v or "ok" for k, v in checks.items()}}
    return JsonResponse(body, status=503 if failed else 200)


urlpatterns = [path("health/live", live), path("health/ready", ready)]
