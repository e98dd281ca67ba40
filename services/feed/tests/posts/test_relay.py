"""The outbox relay on feed's real outbox rows and a real Redis broker (a database of its own, so
no other test's consumer is routed to): a batch is claimed, published to every registered consumer
in commit order and marked sent in one transaction; a publish that fails leaves it pending."""

import base64
import json
import os

import pytest
import redis
from celery import Celery
from kombu.exceptions import BatchPublishError
from posts import services

from shared.events import ledger, subscriptions
from shared.events.celery_config import celery_config
from shared.events.models import OutboxEvent
from shared.events.relay import Relay

pytestmark = pytest.mark.django_db

CONSUMER = "relay-test"


def _app(broker_url: str) -> Celery:
    app = Celery("relay-test", set_as_current=False)  # feed's app stays the one tasks are sent with
    app.conf.update(celery_config("feed"))
    app.conf.broker_url = broker_url
    app.conf.broker_connection_retry_on_startup = False
    return app


@pytest.fixture
def broker():
    url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    subscriptions.register(client, CONSUMER, [("post.created", 1)])
    yield url, client
    client.flushdb()
    client.close()


def _queued(client) -> list[dict]:
    """The envelopes on the consumer's queue, oldest first (kombu LPUSHes, workers BRPOP)."""
    out = []
    for raw in reversed(client.lrange(CONSUMER, 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        out.append(args[0])
    return out


def test_a_batch_is_published_in_commit_order_to_each_consumer_and_marked_sent(person, broker):
    url, client = broker
    author = person("relayauthor")
    first = OutboxEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    posts = [services.post_create(author_id=author.id, body=f"relayed {i}") for i in range(3)]
    rows = list(OutboxEvent.objects.filter(seq__gt=first, type="post.created").order_by("seq"))
    assert len(rows) == 3 and all(r.sent_at is None for r in rows)

    relayed = Relay(_app(url)).relay_batch()

    assert relayed >= 3  # with whatever else this test's transaction had left pending
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    envelopes = [e for e in _queued(client) if e["data"].get("author_id") == str(author.id)]
    assert [e["id"] for e in envelopes] == [str(r.event_id) for r in rows]
    assert [e["data"]["post_id"] for e in envelopes] == [str(p.id) for p in posts]
    assert envelopes[0] == {
        "id": str(rows[0].event_id),
        "type": "post.created",
        "version": 1,
        "occurred_at": rows[0].occurred_at.isoformat().replace("+00:00", "Z"),
        "producer": "feed",
        "data": rows[0].data,
        "request_id": rows[0].request_id,
    }
    # pending in the acknowledgement ledger until the consumer settles them
    pending = client.zrange(ledger.pending_key(CONSUMER, "feed"), 0, -1)
    assert {str(r.event_id).encode() for r in rows} <= set(pending)
    assert Relay(_app(url)).relay_batch() == 0  # nothing is published twice


def test_a_publish_the_broker_refuses_leaves_the_batch_pending(person, broker):
    url, client = broker
    author = person("relayunlucky")
    services.post_create(author_id=author.id, body="not relayed yet")
    pending = OutboxEvent.objects.filter(sent_at__isnull=True).count()
    assert pending >= 1
    client.set(CONSUMER, "not a list")  # the queue's key holds a string: Redis refuses the LPUSH

    with pytest.raises(BatchPublishError) as refused:
        Relay(_app(url)).relay_batch()
    assert "WRONGTYPE" in str(refused.value.__cause__ or refused.value.__context__)

    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == pending
    client.delete(CONSUMER)
    assert Relay(_app(url)).relay_batch() == pending  # the same rows go out once the broker takes them
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    assert len(_queued(client)) == pending
