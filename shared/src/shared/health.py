"""`/health/live` (the process answers; checks nothing else, says which build answers), `/version`
(the same build information: shared.buildinfo) and `/health/ready`.

Readiness fails (503) when the database cannot be reached or the process is draining. Redis is
checked and reported (`"redis": "ConnectionError: …"`, status `degraded`) but does not fail it: a
replica serves without Redis (reads from Postgres, caches bypassed, docs/faults.md), and Redis is
shared by every replica, so failing readiness for it would take all of them out of rotation at once."""

from __future__ import annotations

import threading

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.urls import path

from shared import redis_clients
from shared.buildinfo import build_info

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


def _check_redis() -> str | None:
    try:
        redis_clients.client().ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def _build() -> dict[str, str]:
    return build_info(settings.SERVICE_NAME, str(settings.BASE_DIR))


def live(request):
    return JsonResponse({"status": "ok", **_build()})


def version(request):
    return JsonResponse(_build())


def ready(request):
    checks = {"database": _check_db(), "redis": _check_redis()}
    if is_draining():
        checks["draining"] = "shutting down"
    failed = [name for name in ("database", "draining") if checks.get(name)]
    status = "unavailable" if failed else "degraded" if checks["redis"] else "ok"
    body = {"status": status, "checks": {k: v or "ok" for k, v in checks.items()}}
    return JsonResponse(body, status=503 if failed else 200)


urlpatterns = [path("health/live", live), path("health/ready", ready), path("version", version)]
