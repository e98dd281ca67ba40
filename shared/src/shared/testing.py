"""pytest plugin every service's suite loads (`-p shared.testing`).

Tests run against the real Postgres database and role the test runner bootstrapped
(dev/testrun.py): the service's own role, so schema isolation holds in tests exactly as in
production. There is no throwaway test database to create (service roles may not CREATEDB):
migrations run once per session on the configured database, and each test runs in a
transaction that is rolled back. The service's Redis database is flushed before each test.

Autovacuum is switched off for the service's tables in the test database: each test's
rolled-back inserts would otherwise trigger an auto-analyze at a moment that depends on test
order and machine load, after which the planner's estimates for the (empty) tables change and
EXPLAIN tests see other plans. Plans are judged with the statistics of a never-analyzed table,
in any order; a test that needs real statistics runs ANALYZE itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    with django_db_blocker.unblock():
        call_command("migrate", interactive=False, verbosity=0)
        _no_autovacuum()


def _no_autovacuum() -> None:
    """Autovacuum off for every plain table of the service's schema (module docstring)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = current_schema()"
        )
        for (table,) in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")


@pytest.fixture(autouse=True)
def _clean_redis():
    import redis

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def explain(queryset) -> str:
    """The plan Postgres chooses for a queryset, with sequential scans discouraged as on a big table."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


class QueryCounter(CaptureQueriesContext):
    def __init__(self):
        super().__init__(connection)


REVIEWED_ATTRIBUTE = "reviewed_for_rolling_deploy"


def lint_migrations(**options):
    """django-migration-linter over this service's own migrations and the platform's (`shared`
    apps), not Django's or third parties'. Initial migrations only create tables, so they are
    skipped. Returns the linter: `has_errors` is true when a migration would break the code still
    running during a rolling deploy (a dropped or renamed column, a NOT NULL column without a
    default, …), unless its Migration class says why it may, in `reviewed_for_rolling_deploy = "…"`:
    the contract step of an expand/contract change, or raw SQL checked by hand (docs/releasing.md).
    A plain class attribute, so migrations need no linter at run time."""
    from django.apps import apps
    from django_migration_linter import MigrationLinter

    class Linter(MigrationLinter):
        def should_ignore_migration(self, app_label, migration_name, operations=(), is_initial=False):
            migration = self.migration_loader.disk_migrations.get((app_label, migration_name))
            reason = getattr(migration, REVIEWED_ATTRIBUTE, "")
            assert reason is None or isinstance(reason, str), f"{app_label}.{migration_name}: say why, as text"
            return bool(reason and reason.strip()) or super().should_ignore_migration(
                app_label, migration_name, operations, is_initial
            )

    own = [
        config.label
        for config in apps.get_app_configs()
        if not config.name.startswith(("django.", "rest_framework", "drf_spectacular"))
    ]
    options = {"include_apps": own, "ignore_initial_migrations": True, "no_cache": True, **options}
    linter = Linter(**options)
    linter.lint_all_migrations()
    return linter


def assert_problem(response, status: int, slug: str) -> dict:
    """The response is an RFC 9457 problem of this status and type; returns the body."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + slug), body
    assert body["title"] and isinstance(body["detail"], str)
    return body


class ServiceProcess:
    """Another service, for real: its gunicorn (production config) on a free port, reached over HTTP
    by the suite under test. `service` is the name (users → services/users, users_service.wsgi);
    `env` is its environment (database, Redis, throttles); BIND, SERVICE_NAME and the settings
    module (`settings_module`, default the service's own) are set here. Ready when /health/live
    answers 200; `stop()` ends it."""

    def __init__(self, service_dir, service: str, env: dict, *, quiet: bool = True, settings_module: str | None = None):
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        out = subprocess.DEVNULL if quiet else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:shared.gunicorn_conf", f"{service}_service.wsgi"],
            cwd=service_dir,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={
                **env,
                "BIND": f"127.0.0.1:{port}",
                "SERVICE_NAME": service,
                "DJANGO_SETTINGS_MODULE": settings_module or f"{service}_service.settings",
            },
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health/live", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{service} service exited on start with {self.proc.returncode}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{service} service did not start within 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def start_gunicorn(workdir, app: str, args: list[str], env: dict | None = None, name: str = "gunicorn"):
    """A real gunicorn with one worker serving the WSGI module `app` (source defining `app`) from
    `workdir`, with `args` (worker class, threads, timeouts) and `env` over this process's
    environment, bound to a port the kernel chooses. Returns (process, port, worker pid) once it
    accepts connections; RuntimeError with its log if it exits or does not start in 30 s."""
    import os
    import re
    import socket
    import subprocess
    import sys
    from pathlib import Path

    workdir = Path(workdir)
    (workdir / f"{name}app.py").write_text(app)
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args, "-w", "1", "-b", "127.0.0.1:0", f"{name}app:app"],
        cwd=workdir,
        env={**os.environ, **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        port = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
        worker = re.search(r"Booting worker with pid: (\d+)", text)
        if port and worker:
            with socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=5):
                pass
            return proc, int(port.group(1)), int(worker.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited on start: {text}")
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    raise RuntimeError(f"gunicorn did not start within 30 s: {log.read_text()}")


def dev_signing_key(service: str):
    """`service`'s dev key (shared.service_keys.write_dev_keys), from the directory of the key set
    this process verifies with: lets a test present the credential another service would."""
    from pathlib import Path

    from shared.service_keys import SigningKey, dev_key_path, load_private_key

    directory = Path(settings.SERVICE_PUBLIC_KEYS).parent
    return SigningKey(kid=f"{service}-dev", private_key=load_private_key(dev_key_path(directory, service)))


def service_token(caller: str, target: str, **kw) -> str:
    """A real credential from `caller` (its dev key) to `target`."""
    from shared.auth import ServiceCredential

    return ServiceCredential(caller=caller, target=target, key=dev_signing_key(caller), **kw)()


def wait_until(
    fetch: Callable[[], Any],
    until: Callable[[Any], object] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `fetch()` until `until(value)` holds and return that value; AssertionError (naming `what`
    and the last value) once `timeout` seconds pass. The one way every suite waits for something
    another process makes true: a deadline, never a fixed sleep, and never a timing assertion
    (the timeout bounds a hang; it does not judge speed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last value {value!r})")
        time.sleep(interval)


def assert_build_info(api_client) -> dict:
    """`/version` and `/health/live` report this service's VERSION file, the commit of the checkout it
    runs from, and the shared version it runs with, which must be the one the service pins
    (services/<name>/SHARED_VERSION): a service is released with the platform it was tested with."""
    import subprocess
    from pathlib import Path

    from shared.buildinfo import shared_version

    base = Path(settings.BASE_DIR)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=base, capture_output=True, text=True, check=True)
    expected = {
        "service": settings.SERVICE_NAME,
        "version": (base / "VERSION").read_text().strip(),
        "commit": head.stdout.strip(),
        "shared": shared_version(),
        "shared_pinned": (base / "SHARED_VERSION").read_text().strip(),
    }
    version = api_client.get("/version")
    assert version.status_code == 200 and version.json() == expected, version.content
    assert api_client.get("/health/live").json() == {"status": "ok", **expected}
    assert expected["shared_pinned"] == expected["shared"], (
        f"{settings.SERVICE_NAME} pins shared {expected['shared_pinned']} (services/{settings.SERVICE_NAME}/SHARED_VERSION) "
        f"but runs with shared {expected['shared']} (shared/src/shared/VERSION): release shared and re-pin "
        f"(`make release SERVICE=shared` re-pins every service), or restore the pinned version"
    )
    return expected
