"""shared.events.transport: kombu's Redis transport reusing one client for its bookkeeping, on a real Redis."""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture
def app(monkeypatch):
    from celery import Celery

    from shared.events.celery_app import celery_config

    url = os.environ.get("REDIS_URL_BASE") or os.environ["REDIS_URL"]
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    app = Celery("transport-test")
    app.conf.update(celery_config("transport-test"))
    return app


def test_the_workers_broker_connection_uses_the_project_transport(app):
    from shared.events.transport import Transport

    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, Transport)
        assert conn.transport.driver_type == "redis"  # Celery's Redis-specific paths still apply


def test_one_client_per_pool_until_kombu_replaces_the_pool(app):
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.connection_pool is channel.pool
        handed = object()
        with channel.conn_or_acquire(handed) as given:
            assert given is handed  # a client passed in is used as it is
        channel._disconnect_pools()  # after a fork or a lost connection kombu makes a new pool
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
            assert third.ping()


def test_messages_are_taken_acknowledged_and_restored_through_it(app):
    """The unacked bookkeeping (pipeline on take, on ack, on requeue) goes through the reused client."""
    from kombu import Exchange, Queue

    name = f"transport-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    with app.connection_for_write() as conn:
        channel = conn.channel()
        try:
            bound = queue(channel)
            bound.declare()
            producer = conn.Producer(channel)
            for n in range(3):
                producer.publish({"n": n}, exchange=queue.exchange, routing_key=name, serializer="json", declare=[queue])
            first = bound.get(no_ack=False)
            assert first is not None and first.payload == {"n": 0}
            client = channel.client  # kombu's own client (BRPOP/publish), not the bookkeeping one
            with channel.conn_or_acquire() as bookkeeping:
                assert bookkeeping is not client
                assert bookkeeping.hexists(channel.unacked_key, first.delivery_tag)
                first.ack()
                assert not bookkeeping.hexists(channel.unacked_key, first.delivery_tag)
                second = bound.get(no_ack=False)
                assert second.payload == {"n": 1}
                second.requeue()  # back on the queue, out of the unacked set
                assert not bookkeeping.hexists(channel.unacked_key, second.delivery_tag)
            taken = []
            while (message := bound.get(no_ack=False)) is not None:
                taken.append(message.payload["n"])
                message.ack()
            assert sorted(taken) == [1, 2]
        finally:
            queue(channel).delete()
            channel.close()
