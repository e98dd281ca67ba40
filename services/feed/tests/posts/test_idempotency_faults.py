"""Idempotency-Key under faults, against a real feed process (gunicorn, production config) on the
suite's database: a worker killed right after its commit, and two requests racing with one key.
The record is part of the write's transaction (shared.idempotency), so neither can apply a write
twice. (Redis unreachable: services/users/tests/test_idempotency_redis_down.py.)"""

import json
import os
import threading
from pathlib import Path

import httpx
import pytest
from django.db import connection, transaction
from posts.models import Post

from shared.testing import ServiceProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # the feed process must see (and commit) rows

FEED_DIR = Path(__file__).resolve().parents[2]


def feed_process(users_url: str, **env) -> ServiceProcess:
    return ServiceProcess(
        FEED_DIR,
        "feed",
        {
            **os.environ,
            "USERS_URL": users_url,
            "JWKS_URL": users_url + "/.well-known/jwks.json",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "4",
            **env,
        },
        settings_module="tests.fault_settings",
    )


@pytest.fixture
def feed(users_service):
    process = feed_process(users_service.url)
    yield process
    process.stop()


def post(feed, person, body: str, key: str, **headers) -> httpx.Response:
    return httpx.post(
        feed.url + "/api/v1/posts",
        content=json.dumps({"body": body}),
        timeout=30,
        headers={
            "Authorization": f"Bearer {person.access}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            **headers,
        },
    )


def live(feed) -> bool:
    try:
        return httpx.get(feed.url + "/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_worker_killed_right_after_commit_then_the_retry_replays(feed, person):
    alice = person("alice")
    with pytest.raises(httpx.HTTPError):  # the worker dies after COMMIT, before it can answer
        post(feed, alice, "written once", "crash-1", **{"X-Test-Fault": "kill-after-commit"})
    assert list(Post.objects.filter(author_id=alice.id).values_list("body", flat=True)) == ["written once"]
    wait_until(lambda: live(feed), what="gunicorn to replace the killed worker")

    retry = post(feed, alice, "written once", "crash-1")
    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    (only,) = Post.objects.filter(author_id=alice.id)
    assert retry.json()["id"] == str(only.id) and retry.json()["body"] == "written once"


def _waiting_on_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else the view stays as first read in this transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO \"posts_post\"%'"
        )
        return cursor.fetchone()[0] > 0


def test_two_requests_with_one_key_make_one_write(feed, person):
    alice = person("alice")
    first: dict = {}
    with transaction.atomic():  # hold the first request inside its write: the second arrives meanwhile
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE posts_post IN EXCLUSIVE MODE")
        runner = threading.Thread(target=lambda: first.update(response=post(feed, alice, "racing", "race-1")))
        runner.start()
        wait_until(_waiting_on_lock, what="the first request to block on its INSERT")
        second = post(feed, alice, "racing", "race-1")
    runner.join(timeout=30)
    assert first["response"].status_code == 201, first["response"].text
    assert second.status_code == 409, second.text
    assert second.json()["type"].endswith("/idempotency-key-in-progress")
    third = post(feed, alice, "racing", "race-1")
    assert third.status_code == 201 and third.headers["Idempotent-Replayed"] == "true"
    assert third.json() == first["response"].json()
    assert Post.objects.filter(author_id=alice.id).count() == 1
