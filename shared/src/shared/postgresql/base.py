"""Django's PostgreSQL backend (psycopg2), with a cheaper health check.

CONN_HEALTH_CHECKS makes Django check a persistent connection before a request's first query, with
`SELECT 1`: a round trip to Postgres on every request that touches the database, Postgres' own CPU
included. A connection that is idle (no transaction, no query in flight) has nothing to receive,
so when its socket has nothing to read the server has neither closed it nor sent an error, and it
is taken as usable without asking. When anything is there (the server's goodbye after a restart,
`pg_terminate_backend` or an idle timeout, or EOF) — or the connection is not idle — Django's
`SELECT 1` decides, as before. A peer that vanished without a word is not caught by either check
(`SELECT 1` would wait for TCP to give up too); the query then fails, the request is answered
503 (shared.problems) and the connection is replaced at the next one.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg2 import extensions


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:
            return False
        if conn.get_transaction_status() != extensions.TRANSACTION_STATUS_IDLE:
            return super().is_usable()
        try:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
            pending = poller.poll(0)
        except (OSError, ValueError):
            return False
        return super().is_usable() if pending else True
