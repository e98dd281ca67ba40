"""Feed with its Redis unreachable (REDIS_URL and the cache pointed at a port nothing listens on):
reads come from Postgres, Postgres-backed writes succeed, and what needs Redis is a 503 problem
with Retry-After, never a 500. tests/test_redis_outage.py does the same with a real Redis stopped
and started again under real processes."""

import json
import time

import pytest
from posts.models import Like, Post

from shared import ids, redis_clients
from shared.testing import assert_problem
from tests.timelines.test_timelines import fan_out, feed_ids, post

pytestmark = pytest.mark.django_db

DEAD = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_away(settings):
    """Point Redis and the cache at a closed port (the cache handler is rebuilt on the change)."""

    def away():
        settings.REDIS_URL = DEAD
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": DEAD}}

    return away


def test_home_and_user_timelines_and_a_post_are_served_from_postgres(person, redis_away):
    author, reader = person("author"), person("reader")
    reader.follow(author)
    first = post(author, "before")
    fan_out(first)
    assert feed_ids(reader) == [first]
    ids.next_id(namespace="posts")  # this process holds its id lease, as a started gunicorn worker does
    redis_away()

    assert feed_ids(reader) == [first]  # the durable timeline rows
    assert feed_ids(reader, limit=1) == [first]
    page = reader.api.get("/api/v1/feed")
    assert page.status_code == 200 and page.json()["results"][0]["author"]["username"] == author.username
    second = post(author, "while Redis is away")  # its fan-out waits for Redis (the event is in the outbox)
    assert Post.objects.filter(id=second).exists()
    mine = reader.api.get("/api/v1/posts", {"author": author.username})
    assert mine.status_code == 200 and [int(p["id"]) for p in mine.json()["results"]] == [second, first]
    liked = reader.api.post(f"/api/v1/posts/{first}/like")
    assert liked.status_code == 201 and liked.json()["like_count"] == 1
    assert reader.api.get(f"/api/v1/posts/{first}").json()["like_count"] == 1
    assert reader.api.delete(f"/api/v1/posts/{first}/like").status_code == 204
    assert author.api.delete(f"/api/v1/posts/{second}").status_code == 204
    assert not Like.objects.filter(post_id=first).exists() and not Post.objects.filter(id=second).exists()


def test_a_post_that_needs_an_id_lease_is_503_with_retry_after_and_writes_nothing(person, redis_away, monkeypatch):
    author = person("author")
    monkeypatch.setattr(ids, "_state", {})  # a process that has not leased a worker number yet
    monkeypatch.delenv("SNOWFLAKE_WORKER_ID", raising=False)
    redis_away()
    before = Post.objects.count()
    response = author.api.post("/api/v1/posts", data=json.dumps({"body": "no id"}), content_type="application/json")
    body = assert_problem(response, 503, "dependency-unavailable")
    assert int(response["Retry-After"]) >= 1
    assert response["X-Failure-Cause"] == "dependency"  # the gateway does not eject a replica for it
    assert "Redis" not in body["detail"]  # internals stay out of the answer
    assert Post.objects.count() == before


def test_a_held_lease_outlives_failed_renewals_until_it_would_expire(settings):
    lease = ids.RedisWorkerLease(settings.REDIS_URL, namespace="lease-test")
    lease._redis = redis_clients.client(DEAD)
    lease._renewed_at = time.monotonic() - ids.LEASE_SECONDS / 2  # renewal due, Redis away
    assert lease.renew_if_due()
    lease._renewed_at = time.monotonic() - ids.LEASE_SECONDS  # it would have expired: stop using it
    assert not lease.renew_if_due()


def test_a_lease_taken_over_by_another_process_is_given_up(settings):
    lease = ids.RedisWorkerLease(settings.REDIS_URL, namespace="lease-test")
    redis_clients.client().set(lease._key(lease.worker_id), "someone-else", ex=60)
    lease._renewed_at = time.monotonic() - ids.LEASE_SECONDS / 2
    assert not lease.renew_if_due()
    assert redis_clients.client().get(lease._key(lease.worker_id)) == b"someone-else"


def test_an_unreachable_redis_fails_fast_and_is_used_again_once_back(monkeypatch):
    """After a failed connect, calls fail at once for REDIS_DOWN_SECONDS, then try again."""
    monkeypatch.setattr(redis_clients, "_down_until", {})
    dead = redis_clients.client(DEAD)
    with pytest.raises(redis_clients.UNAVAILABLE):
        dead.ping()
    assert ("127.0.0.1", 1) in redis_clients._down_until
    with pytest.raises(redis_clients.UNAVAILABLE, match="unreachable"):
        dead.get("x")
    redis_clients._down_until[("127.0.0.1", 1)] = time.monotonic() - 1  # the quiet period is over
    with pytest.raises(redis_clients.UNAVAILABLE):
        dead.ping()  # tried again for real (and still down)
    assert redis_clients._down_until[("127.0.0.1", 1)] > time.monotonic()
    assert redis_clients.client().ping()  # the live Redis is unaffected
