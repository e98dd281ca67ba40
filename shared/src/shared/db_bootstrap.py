"""Create the database, one role and one schema per service; idempotent.

    python -m shared.db_bootstrap --admin-url postgresql://postgres:…@host/postgres \
        --database social users:PASSWORD feed:PASSWORD notifications:PASSWORD

Each role owns its schema and nothing else: it has USAGE on no other schema, `public` is closed
to everyone, and the role's `search_path` is its own schema, so unqualified table names land
there. A query from feed against `users.*` fails with "permission denied for schema users".
Prints one service DATABASE_URL per line.

`--wait SECONDS` (default 60): until then, a Postgres it cannot reach yet (a name the container
network's DNS does not resolve yet, a server still starting, a refused connection) is tried again
with backoff, each attempt reported on stderr, instead of failing the deployment's one-shot step
on the first attempt.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote, urlparse, urlunparse

import psycopg2
from psycopg2 import sql

T = TypeVar("T")


def retry_unreachable(
    connect: Callable[[], T], wait: float, *, errors: type[Exception] | tuple, report: Callable[[str, float], object]
) -> T:
    """`connect()` until it returns. An exception in `errors` (unreachable, starting up) is tried
    again with backoff (0.25 s, doubling up to 2 s) for up to `wait` seconds, each attempt told to
    `report(reason, delay)`, then raised. Also `manage.py migrate --wait` (shared.platform)."""
    deadline = time.monotonic() + wait
    delay = 0.25
    while True:
        try:
            return connect()
        except errors as exc:
            if time.monotonic() + delay > deadline:
                raise
            report(" ".join(str(exc).split()), delay)
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def _connect(url: str, dbname: str | None = None, wait: float = 0.0):
    """An autocommit connection; OperationalError (unreachable, starting up) is retried with
    backoff for up to `wait` seconds, then raised."""
    if dbname is not None:
        parts = urlparse(url)
        url = urlunparse(parts._replace(path="/" + dbname))
    conn = retry_unreachable(
        lambda: psycopg2.connect(url, connect_timeout=5),
        wait,
        errors=psycopg2.OperationalError,
        report=lambda reason, delay: print(
            f"db_bootstrap: Postgres not reachable yet ({reason}); trying again in {delay:.2g} s", file=sys.stderr
        ),
    )
    conn.autocommit = True
    return conn


def service_url(admin_url: str, database: str, role: str, password: str) -> str:
    parts = urlparse(admin_url)
    netloc = f"{quote(role)}:{quote(password, safe='')}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc, path="/" + database, query=""))


def bootstrap(admin_url: str, database: str, services: dict[str, str], *, wait: float = 0.0) -> dict[str, str]:
    conn = _connect(admin_url, wait=wait)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8'").format(sql.Identifier(database)))
        for role, password in services.items():
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s").format(sql.Identifier(role)),
                [password],
            )
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    conn.close()
    conn = _connect(admin_url, database, wait=wait)
    with conn.cursor() as cur:
        cur.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        for role in services:
            ident = sql.Identifier(role)
            cur.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(database), ident))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(ident, ident))
            cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(ident))
            cur.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(ident, sql.Identifier(database), ident)
            )
    conn.close()
    return {role: service_url(admin_url, database, role, password) for role, password in services.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to keep trying an unreachable Postgres")
    parser.add_argument("services", nargs="+", help="role:password")
    args = parser.parse_args(argv)
    services = dict(item.split(":", 1) for item in args.services)
    for role, url in bootstrap(args.admin_url, args.database, services, wait=args.wait).items():
        print(f"{role} {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
