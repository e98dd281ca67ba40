"""Schema ownership is enforced by Postgres: other services' roles cannot read users' tables."""

import os

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
