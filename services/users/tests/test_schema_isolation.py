"""Schema ownership is enforced by Postgres: other services' roles cannot read users' tables."""

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest
import users_service.settings as configured
from psycopg2 import errors

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[3]


def run_as(role: str, sql: str):
    conn = psycopg2.connect(os.environ[f"{role.upper()}_DATABASE_URL"])
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("role", ["feed", "notifications"])
@pytest.mark.parametrize("table", ["accounts_user", "accounts_refreshtoken", "follows_follow"])
def test_other_roles_get_permission_denied(alice, role, table):
    with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema users"):
        run_as(role, f"SELECT * FROM users.{table}")


@pytest.mark.parametrize("role", ["feed", "notifications"])
def test_other_roles_do_not_see_users_tables_unqualified(alice, role):
    with pytest.raises(errors.UndefinedTable):
        run_as(role, "SELECT * FROM accounts_user")


def test_users_role_reads_its_own_schema(alice):
    assert run_as("users", "SELECT current_schema(), count(*) FROM accounts_user") == [("users", 1)]


def test_public_schema_is_closed(alice):
    with pytest.raises(errors.InsufficientPrivilege):
        run_as("users", "CREATE TABLE public.sneaky (id int)")


def test_passwords_hash_with_argon2_first():
    assert configured.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"


def test_bootstrap_is_idempotent(alice):
    from shared.db_bootstrap import bootstrap

    passwords = {svc: f"{svc}-dev-password" for svc in ("users", "feed", "notifications")}
    database = os.environ["USERS_DATABASE_URL"].rsplit("/", 1)[1]
    urls = bootstrap(os.environ["ADMIN_DATABASE_URL"], database, passwords)
    assert urls["users"] == os.environ["USERS_DATABASE_URL"]
    assert run_as("users", "SELECT count(*) FROM accounts_user") == [(1,)]  # nothing dropped or reset


@contextlib.contextmanager
def postgres_reachable_after(seconds: float, target_port: int):
    """A port in front of Postgres (bench/delay_proxy.py) that refuses connections until `seconds`
    after the block starts; yields the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "delay_proxy.py"), str(port), str(target_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def command(line: str) -> None:
            proxy.stdin.write(line + "\n")
            proxy.stdin.flush()
            assert proxy.stdout.readline().strip() == "ok"

        assert proxy.stdout.readline().strip() == "ready"
        command("close")
        opener = threading.Timer(seconds, command, ["open"])
        opener.start()
        try:
            yield port
        finally:
            opener.join()
    finally:
        proxy.stdin.close()  # EOF: the proxy stops
        proxy.wait(timeout=10)
        proxy.stdout.close()


def test_bootstrap_waits_for_a_postgres_that_is_not_reachable_yet(capsys):
    from shared.db_bootstrap import _connect

    admin = urlparse(os.environ["ADMIN_DATABASE_URL"])
    with postgres_reachable_after(1.0, admin.port) as port:
        conn = _connect(admin._replace(netloc=f"{admin.username}:{admin.password}@127.0.0.1:{port}").geturl(), wait=30)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
        finally:
            conn.close()
    assert "Postgres not reachable yet" in capsys.readouterr().err


def _migrate(port: int, *args: str) -> subprocess.CompletedProcess:
    """`manage.py migrate --no-input *args` of the users service, its database reached on `port`."""
    url = urlparse(os.environ["USERS_DATABASE_URL"])
    env = {**os.environ, "DATABASE_URL": url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{port}").geturl()}
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", *args],
        cwd=ROOT / "services" / "users",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_waits_for_a_database_not_reachable_yet():
    """`manage.py migrate --wait`, as the deployments' migration one-shots run it, against a
    Postgres that refuses connections for its first 5 s (Django's start-up alone takes about one)."""
    with postgres_reachable_after(5.0, urlparse(os.environ["USERS_DATABASE_URL"]).port) as port:
        done = _migrate(port, "--wait", "30")
    assert done.returncode == 0, done.stderr
    assert "database not reachable yet" in done.stderr
    assert "No migrations to apply" in done.stdout


def test_migrate_without_wait_fails_at_once_as_djangos_own():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    done = _migrate(port)
    assert done.returncode != 0
    assert "not reachable yet" not in done.stderr
    assert "OperationalError" in done.stderr


def test_bootstrap_gives_up_after_its_wait(capsys):
    from shared.db_bootstrap import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    with pytest.raises(psycopg2.OperationalError):
        main(["--admin-url", f"postgresql://postgres:x@127.0.0.1:{port}/postgres", "--database", "d", "--wait", "1", "users:pw"])
    # backoff 0.25, 0.5, then 1 s would pass the wait: at most two retries, not a minute of them
    assert 1 <= capsys.readouterr().err.count("Postgres not reachable yet") <= 2
