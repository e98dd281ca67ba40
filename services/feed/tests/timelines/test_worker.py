"""The same paths end to end with real processes: users (gunicorn) emits user.* through its
outbox, its relay publishes to feed's queue, a real feed Celery worker applies them and runs the
fan-out and removal tasks. Data is committed (transaction=True) so the other processes see it."""

import json
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from posts.models import Post
from timelines import store
from timelines.models import TimelineEntry

from tests.conftest import USERS_DIR, users_env

pytestmark = pytest.mark.django_db(transaction=True)
FEED_DIR = USERS_DIR.parent / "feed"


def eventually(check, *, attempts: int = 600):
    """Poll a condition the workers make true; fails (not times) after a bounded number of tries."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.05)
    assert check()


@pytest.fixture
def workers(users_service):
    env = {**os.environ, "CELERY_BROKER_URL": settings.REDIS_URL, "USERS_URL": users_service.url,
           "JWKS_URL": users_service.url + "/.well-known/jwks.json"}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "feed_service", "worker", "-Q", "feed",
                               "-c", "2", "--without-heartbeat", "--without-gossip", "--without-mingle",
                               "--loglevel", "WARNING"], cwd=FEED_DIR, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = subprocess.Popen([sys.executable, "manage.py", "events_relay", "--poll-interval", "0.2"], cwd=USERS_DIR,
                             env={**users_env(0), "CELERY_BROKER_URL": settings.REDIS_URL},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield
    for proc in (relay, worker):
        proc.terminate()
    for proc in (relay, worker):
        proc.wait(timeout=30)


def test_follow_post_fanout_and_delete_through_real_workers(person, workers):
    author, fan = person("author"), person("fan")
    early = int(author.api.post("/api/v1/posts", data=json.dumps({"body": "before the follow"}),
                                content_type="application/json").json()["id"])
    fan.follow(author)  # users → outbox → relay → feed worker: backfill
    eventually(lambda: TimelineEntry.objects.filter(user_id=fan.id, post_id=early).exists())
    assert [p["id"] for p in fan.api.get("/api/v1/feed").json()["results"]] == [str(early)]

    later = int(author.api.post("/api/v1/posts", data=json.dumps({"body": "after"}),
                                content_type="application/json").json()["id"])  # on_commit → fan-out task
    eventually(lambda: store.client().zscore(store.key(fan.id), str(later)) is not None)
    assert [p["id"] for p in fan.api.get("/api/v1/feed").json()["results"]] == [str(later), str(early)]

    assert author.api.delete(f"/api/v1/posts/{later}").status_code == 204
    eventually(lambda: not TimelineEntry.objects.filter(post_id=later).exists())
    assert store.client().zscore(store.key(fan.id), str(later)) is None

    fan.unfollow(author)
    eventually(lambda: not TimelineEntry.objects.filter(user_id=fan.id).exists())
    assert fan.api.get("/api/v1/feed").json()["results"] == []
    assert Post.objects.filter(author_id=author.id).count() == 1
