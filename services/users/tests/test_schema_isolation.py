"""Schema ownership is enforced by Postgres: other services' roles cannot read users' tables."""

import contextlib
import os
import socket
import threading
import time
from urllib.parse import urlparse

import psycopg2
import pytest
import users_service.settings as configured
from psycopg2 import errors

pytestmark = pytest.mark.django_db(transaction=True)


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


def _forward_after(delay: float, target: tuple[str, int]) -> tuple[int, threading.Thread]:
    """A port that starts listening `delay` seconds from now and forwards its one connection to
    `target`: a Postgres that becomes reachable while db_bootstrap is trying."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def pipe(src, dst):
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve():
        time.sleep(delay)
        with socket.create_server(("127.0.0.1", port)) as listener:
            client, _ = listener.accept()
            upstream = socket.create_connection(target)
            back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
            back.start()
            pipe(client, upstream)
            back.join(timeout=10)
            client.close()
            upstream.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_bootstrap_waits_for_a_postgres_that_is_not_reachable_yet(capsys):
    from shared.db_bootstrap import _connect

    admin = urlparse(os.environ["ADMIN_DATABASE_URL"])
    port, thread = _forward_after(1.0, (admin.hostname, admin.port))
    conn = _connect(admin._replace(netloc=f"{admin.username}:{admin.password}@127.0.0.1:{port}").geturl(), wait=30)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    thread.join(timeout=10)
    assert "Postgres not reachable yet" in capsys.readouterr().err


def test_bootstrap_gives_up_after_its_wait(capsys):
    from shared.db_bootstrap import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    with pytest.raises(psycopg2.OperationalError):
        main(["--admin-url", f"postgresql://postgres:x@127.0.0.1:{port}/postgres", "--database", "d", "--wait", "1", "users:pw"])
    # backoff 0.25, 0.5, then 1 s would pass the wait: at most two retries, not a minute of them
    assert 1 <= capsys.readouterr().err.count("Postgres not reachable yet") <= 2
