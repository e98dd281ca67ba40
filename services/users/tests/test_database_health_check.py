"""shared.postgresql: a persistent connection's health check asks Postgres only when its socket says
something happened, and a connection the server closed is still caught and replaced."""

import time

import pytest
from django.db import connection, connections
from django.db.backends.postgresql.base import DatabaseWrapper as DjangoWrapper

from shared.postgresql.base import DatabaseWrapper

pytestmark = pytest.mark.django_db


@pytest.fixture
def round_trips(monkeypatch):
    """How many times Django's own check (`SELECT 1`) ran."""
    calls = []
    original = DjangoWrapper.is_usable

    def counted(self):
        calls.append(self.alias)
        return original(self)

    monkeypatch.setattr(DjangoWrapper, "is_usable", counted)
    return calls


@pytest.fixture
def own_connection():
    """A second connection to the test database, outside the test's transaction, as a gunicorn
    thread's persistent connection is between requests."""
    conn = connections.create_connection("default")
    assert isinstance(conn, DatabaseWrapper)
    conn.ensure_connection()
    yield conn
    conn.close()


def backend_pid(conn) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_an_idle_healthy_connection_is_usable_without_a_round_trip(own_connection, round_trips):
    pid = backend_pid(own_connection)
    for _ in range(3):
        assert own_connection.is_usable()
    assert round_trips == []
    assert backend_pid(own_connection) == pid  # the same server connection all along


def test_a_connection_the_server_closed_is_caught_and_replaced(own_connection, round_trips):
    pid = backend_pid(own_connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 10
    while own_connection.is_usable() and time.monotonic() < deadline:  # the goodbye is on its way
        time.sleep(0.05)
    assert not own_connection.is_usable()
    assert round_trips  # the socket had something to read: Django's check decided, and failed

    # what Django does before a request's first query: the health check, then a new connection
    own_connection.health_check_done = False
    own_connection.close_if_health_check_failed()
    assert own_connection.connection is None
    assert backend_pid(own_connection) != pid


def test_a_connection_inside_a_transaction_is_checked_by_postgres(own_connection, round_trips):
    own_connection.set_autocommit(False)
    try:
        backend_pid(own_connection)  # a transaction is open now
        assert own_connection.is_usable()
        assert round_trips == ["default"]
    finally:
        own_connection.rollback()
        own_connection.set_autocommit(True)


def test_a_closed_connection_is_not_usable(own_connection, round_trips):
    own_connection.connection.close()
    assert not own_connection.is_usable()
    assert round_trips == []
