"""The same paths end to end with real processes: users (gunicorn) emits user.* through its
outbox, its relay publishes to feed's queue; feed's own relay publishes post.* to feed's queue
too; a real feed Celery worker applies them (fan-out and removal are post.* handlers). Data is
committed (transaction=True) so the other processes see it."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from django.conf import settings
from posts.models import Post
from timelines import store
from timelines.models import AuthorStats, BigAuthorFollow, TimelineEntry

from shared.testing import wait_until
from tests.conftest import USERS_DIR, users_env

pytestmark = pytest.mark.django_db(transaction=True)
FEED_DIR = USERS_DIR.parent / "feed"


def eventually(check):
    """Wait for a condition the workers make true (`shared.testing.wait_until`)."""
    return wait_until(check, timeout=30.0, what="the workers' effect")


def feed_relay(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "events_relay", *(args or ("--poll-interval", "0.2"))],
        cwd=FEED_DIR,
        env={**os.environ, "CELERY_BROKER_URL": settings.REDIS_URL, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


@pytest.fixture
def workers(users_service):
    # feed's subscriptions, as its deploy (migrate) registers them: every test starts on a flushed
    # Redis, and the worker's own registration at start-up may come after the test's first event
    from shared.events.subscriptions import register_service

    register_service(settings.REDIS_URL, "feed")
    env = {
        **os.environ,
        "CELERY_BROKER_URL": settings.REDIS_URL,
        "USERS_URL": users_service.url,
        "JWKS_URL": users_service.url + "/.well-known/jwks.json",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "feed_service",
            "worker",
            "-Q",
            "feed",
            "--pool",
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        cwd=FEED_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "events_relay", "--poll-interval", "0.2"],
        cwd=USERS_DIR,
        env={**users_env(), "CELERY_BROKER_URL": settings.REDIS_URL},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = {"worker": worker, "users_relay": relay}
    yield procs
    stop(*procs.values())


@pytest.fixture
def feed_relayed(workers):
    """The workers plus feed's own relay (post.* → feed's queue); a test may stop and restart it."""
    workers["feed_relay"] = feed_relay()
    return workers


def test_follow_post_fanout_and_delete_through_real_workers(person, feed_relayed):
    author, fan = person("author"), person("fan")
    early = int(
        author.api.post("/api/v1/posts", data=json.dumps({"body": "before the follow"}), content_type="application/json").json()[
            "id"
        ]
    )
    fan.follow(author)  # users → outbox → relay → feed worker: backfill
    eventually(lambda: TimelineEntry.objects.filter(user_id=fan.id, post_id=early).exists())
    assert [p["id"] for p in fan.api.get("/api/v1/feed").json()["results"]] == [str(early)]

    later = int(
        author.api.post("/api/v1/posts", data=json.dumps({"body": "after"}), content_type="application/json").json()["id"]
    )  # outbox → relay → post.created handler
    eventually(lambda: store.client().zscore(store.key(fan.id), str(later)) is not None)
    assert [p["id"] for p in fan.api.get("/api/v1/feed").json()["results"]] == [str(later), str(early)]

    assert author.api.delete(f"/api/v1/posts/{later}").status_code == 204
    eventually(lambda: not TimelineEntry.objects.filter(post_id=later).exists())
    assert store.client().zscore(store.key(fan.id), str(later)) is None

    fan.unfollow(author)
    eventually(lambda: not TimelineEntry.objects.filter(user_id=fan.id).exists())
    assert fan.api.get("/api/v1/feed").json()["results"] == []
    assert Post.objects.filter(author_id=author.id).count() == 1


def test_post_whose_producer_is_killed_right_after_commit_still_reaches_followers(person, feed_relayed):
    author, fan, other = person("author"), person("fan"), person("other")
    fan.follow(author)
    other.follow(author)
    # both user.followed applied first (their backfill would otherwise copy the new post in: seen
    # once on a loaded machine), then fan's Redis timeline built
    eventually(lambda: AuthorStats.objects.filter(author_id=author.id, followers_count=2).exists())
    eventually(
        lambda: (
            TimelineEntry.objects.filter(user_id__in=[fan.id, other.id]).count() == 0
            and fan.api.get("/api/v1/feed").status_code == 200
        )
    )
    stop(feed_relayed["feed_relay"])  # nothing may publish the event but the relay
    # The producer is feed's own code in its own process. Its first on_commit callback SIGKILLs it:
    # the post is committed, and nothing queued after the commit (as fan-out used to be) can run.
    code = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            textwrap.dedent(f"""
        import os, signal
        from django.db import transaction
        from posts.services import post_create
        with transaction.atomic():
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
            post = post_create(author_id={author.id}, body="committed, then the process died")
    """),
        ],
        cwd=FEED_DIR,
        env=os.environ.copy(),
        check=False,
    ).returncode
    assert code == -9
    post_id = Post.objects.get(author_id=author.id).id
    assert not TimelineEntry.objects.filter(post_id=post_id).exists()

    feed_relayed["feed_relay"] = feed_relay()
    eventually(lambda: TimelineEntry.objects.filter(post_id=post_id).count() == 3)
    assert sorted(TimelineEntry.objects.filter(post_id=post_id).values_list("user_id", flat=True)) == sorted(
        [author.id, fan.id, other.id]
    )
    eventually(lambda: store.client().zscore(store.key(fan.id), str(post_id)) is not None)
    assert [p["id"] for p in fan.api.get("/api/v1/feed").json()["results"]] == [str(post_id)]
    assert [p["id"] for p in other.api.get("/api/v1/feed").json()["results"]] == [str(post_id)]


def test_relay_without_polling_is_woken_by_each_commit_and_by_a_new_listen_connection(person, workers):
    """The relay as deployed sleeps on its LISTEN connection; here its fallback poll is an hour, so
    only the NOTIFY of each commit can wake it. Its LISTEN connection is then killed from the
    database side: the relay reconnects and the next post is relayed as promptly. SIGTERM stops it
    without waiting for the poll."""
    from django.db import connection

    relay = feed_relay(env={"EVENTS_RELAY_POLL_SECONDS": "3600"})
    workers["feed_relay"] = relay
    author, fan = person("author"), person("fan")
    fan.follow(author)
    # the worker and both relays have started (a loaded machine boots Django and Celery slowly)
    wait_until(
        lambda: AuthorStats.objects.filter(author_id=author.id, followers_count=1).exists(), timeout=120, what="the follow"
    )

    def post(body: str) -> int:
        response = author.api.post("/api/v1/posts", data=json.dumps({"body": body}), content_type="application/json")
        return int(response.json()["id"])

    def listening() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'feed-relay-listen'")
            return [row[0] for row in cursor.fetchall()]

    first = post("woken by its commit")
    eventually(lambda: TimelineEntry.objects.filter(user_id=fan.id, post_id=first).exists())
    (old,) = wait_until(listening, timeout=30.0, what="the relay's LISTEN connection")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [old])
    wait_until(lambda: [pid for pid in listening() if pid != old], timeout=30.0, what="a new LISTEN connection")
    second = post("after the LISTEN connection was killed")
    eventually(lambda: TimelineEntry.objects.filter(user_id=fan.id, post_id=second).exists())
    assert relay.poll() is None
    # SIGTERM wakes it from its sleep (an hour here): it stops now, not at its next poll
    relay.terminate()
    assert relay.wait(timeout=60) == 0


@pytest.fixture
def hybrid_thresholds(monkeypatch):
    """The worker's hybrid thresholds (its settings come from the environment): big above 3
    followers, demoted below 2."""
    monkeypatch.setenv("FANOUT_MAX_FOLLOWERS", "3")
    monkeypatch.setenv("FANOUT_DEMOTE_FOLLOWERS", "2")


def test_big_author_promoted_then_demoted_through_real_workers_readers_never_lose_its_posts(
    person, hybrid_thresholds, feed_relayed
):
    star = person("star")
    fans = [person("fan") for _ in range(4)]
    early = int(star.api.post("/api/v1/posts", data=json.dumps({"body": "early"}), content_type="application/json").json()["id"])
    for fan in fans:
        fan.follow(star)
    # the 4th follow promotes: every edge recorded by the promotion walk
    eventually(
        lambda: (
            AuthorStats.objects.filter(author_id=star.id, followers_count=4, is_big=True).exists()
            and BigAuthorFollow.objects.filter(author_id=star.id).count() == 4
        )
    )
    late = int(
        star.api.post("/api/v1/posts", data=json.dumps({"body": "while big"}), content_type="application/json").json()["id"]
    )
    eventually(lambda: TimelineEntry.objects.filter(post_id=late).exists())  # handled: the star's own timeline
    assert list(TimelineEntry.objects.filter(post_id=late).values_list("user_id", flat=True)) == [star.id]
    reader = fans[0]
    seen = []

    def read() -> list[int]:
        ids = [int(p["id"]) for p in reader.api.get("/api/v1/feed").json()["results"]]
        seen.append(ids)
        return ids

    assert read() == [late, early]  # early backfilled on follow, late merged at read

    def count_is(n):
        eventually(lambda: AuthorStats.objects.filter(author_id=star.id, followers_count=n).exists())

    # between the thresholds (2 <= count <= 3): stays big however often it moves
    fans[3].unfollow(star)
    count_is(3)
    fans[2].unfollow(star)
    count_is(2)
    fans[2].follow(star)
    count_is(3)
    fans[2].unfollow(star)
    count_is(2)
    assert AuthorStats.objects.get(author_id=star.id).is_big is True
    assert sorted(BigAuthorFollow.objects.filter(author_id=star.id).values_list("user_id", flat=True)) == sorted(
        [fans[0].id, fans[1].id]
    )

    fans[1].unfollow(star)  # 1 < 2: demoted; the reader keeps reading all along
    for _ in range(600):
        assert read() == [late, early]
        if (
            AuthorStats.objects.filter(author_id=star.id, followers_count=1, is_big=False).exists()
            and not BigAuthorFollow.objects.filter(author_id=star.id).exists()
        ):
            break
        time.sleep(0.02)
    assert not BigAuthorFollow.objects.filter(author_id=star.id).exists()
    assert all(ids == [late, early] for ids in seen), seen  # never without the star's posts, never twice
    assert sorted(TimelineEntry.objects.filter(user_id=reader.id).values_list("post_id", flat=True)) == [early, late]
    assert read() == [late, early]  # now from the timeline alone

    after = int(
        star.api.post("/api/v1/posts", data=json.dumps({"body": "fanned out again"}), content_type="application/json").json()[
            "id"
        ]
    )
    eventually(lambda: TimelineEntry.objects.filter(user_id=reader.id, post_id=after).exists())
    eventually(lambda: read() == [after, late, early])
