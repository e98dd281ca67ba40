"""Redis away, for real: users and feed (gunicorn, production config), feed's Celery worker, both
relays, and a Redis of our own that the test stops and starts again (so no other test is
disturbed). While Redis is down, what Postgres can serve is served (home timeline from its
durable rows, user timeline, profiles, logins, posts, likes) and nothing answers 500; once Redis
is back, everything works again without a restart, and the posts written during the outage reach
their followers' timelines (their events waited in the outbox)."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests import harness
from tests.harness import PYTHON, ROOT, Proc, celery_worker, wait_until

SERVICES = ("users", "feed")


class Outage:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.redis = harness.OwnRedis(run_dir)
        self.redis_url = self.redis.url
        self.ports = {service: harness.infra.free_port() for service in SERVICES}
        self.urls = {service: f"http://127.0.0.1:{port}" for service, port in self.ports.items()}
        common = harness.stack_env(
            self.redis_url,
            USERS_URL=self.urls["users"],
            JWKS_URL=self.urls["users"] + "/.well-known/jwks.json",
            THROTTLE_LOGIN_IP="1000/min",
            THROTTLE_REGISTER_IP="1000/min",
            EVENTS_RETRY_BACKOFF="0.05",
            EVENTS_RETRY_BACKOFF_MAX="0.5",
        )
        from shared.service_keys import dev_key_path

        keys = Path(os.environ["SERVICE_PUBLIC_KEYS"]).parent  # the key set dev/testrun.py wrote, one key per service
        self.env = {
            service: harness.service_env(common, service, SERVICE_SIGNING_KEYS=f"{service}-dev={dev_key_path(keys, service)}")
            for service in SERVICES
        }
        for service in SERVICES:
            harness.manage(self.cwd(service), self.env[service], "migrate", "--no-input", "-v", "0")
        self.procs: list[Proc] = []
        for service in SERVICES:
            self.procs.append(
                Proc(
                    service,
                    [PYTHON, "-m", "gunicorn", "-c", "python:shared.gunicorn_conf", f"{service}_service.wsgi"],
                    cwd=self.cwd(service),
                    env={**self.env[service], "BIND": f"127.0.0.1:{self.ports[service]}"},
                    log_dir=run_dir,
                )
            )
            self.procs.append(harness.relay(service, self.env[service], run_dir))
        self.procs.append(
            Proc(
                "feed-worker",
                celery_worker("feed_service", "feed"),
                cwd=self.cwd("feed"),
                env={**self.env["feed"], "METRICS_PORT": "0"},
                log_dir=run_dir,
            )
        )
        for proc in self.procs:
            proc.start()
        self.http = httpx.Client(timeout=10)
        for url in self.urls.values():
            wait_until(lambda url=url: self._ready(url), timeout=60, what=f"{url} ready")
        self.statuses: Counter[int] = Counter()

    @staticmethod
    def cwd(service: str) -> Path:
        return ROOT / "services" / service

    def _ready(self, url: str) -> bool:
        try:
            return self.http.get(url + "/health/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, method: str, service: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(method, self.urls[service] + path, headers=headers, **kwargs)
        self.statuses[response.status_code] += 1
        return response

    def register(self, name: str) -> tuple[int, str]:
        response = self.call(
            "POST",
            "users",
            "/api/v1/auth/register",
            json={"username": name, "email": f"{name}@example.com", "password": "correct horse battery"},
        )
        assert response.status_code == 201, response.text
        return int(response.json()["user"]["id"]), response.json()["access"]

    def home_ids(self, token: str) -> list[str]:
        response = self.call("GET", "feed", "/api/v1/feed?limit=50", token)
        assert response.status_code == 200, response.text
        return [post["id"] for post in response.json()["results"]]

    def post(self, token: str, body: str) -> str:
        response = self.call("POST", "feed", "/api/v1/posts", token, json={"body": body})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def close(self) -> None:
        self.http.close()
        for proc in reversed(self.procs):
            proc.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def outage():
    with harness.own_stack("social-redis-outage-", Outage) as stack:
        yield stack


def test_redis_down_reads_and_writes_served_from_postgres_then_everything_recovers(outage):
    tag = uuid.uuid4().hex[:6]
    author, reader = f"ra{tag}", f"rb{tag}"
    _, author_token = outage.register(author)
    reader_id, reader_token = outage.register(reader)
    assert outage.call("POST", "users", f"/api/v1/users/{author}/follow", reader_token).status_code == 201
    before = outage.post(author_token, "before the outage")
    wait_until(lambda: before in outage.home_ids(reader_token), what="fan-out before the outage")
    timeline_key = f"tl:{reader_id}"
    assert redis.Redis.from_url(outage.redis_url).exists(timeline_key)  # the read is served from Redis

    outage.redis.stop()
    assert outage.call("GET", "feed", "/health/ready").status_code == 200  # degraded, still in rotation
    ready = outage.call("GET", "feed", "/health/ready").json()
    assert ready["status"] == "degraded" and ready["checks"]["redis"] != "ok", ready
    assert outage.home_ids(reader_token) == [before]  # from the durable timeline rows
    mine = outage.call("GET", "feed", f"/api/v1/posts?author={author}", reader_token)
    assert mine.status_code == 200 and [p["id"] for p in mine.json()["results"]] == [before], mine.text
    assert mine.json()["results"][0]["author"]["username"] == author  # profile from users, cache bypassed
    profile = outage.call("GET", "users", f"/api/v1/users/{author}", reader_token)
    assert profile.status_code == 200 and profile.json()["username"] == author, profile.text
    login = outage.call("POST", "users", "/api/v1/auth/login", json={"username": reader, "password": "correct horse battery"})
    assert login.status_code == 200, login.text  # login throttles fail open
    during = [outage.post(author_token, f"written while Redis is down {i}") for i in range(3)]
    liked = outage.call("POST", "feed", f"/api/v1/posts/{before}/like", reader_token)
    assert liked.status_code in (200, 201) and liked.json()["like_count"] == 1, liked.text
    for _ in range(5):  # every worker thread and both gunicorn workers get asked
        assert outage.home_ids(reader_token) == [before]
        assert outage.call("GET", "feed", f"/api/v1/posts/{during[0]}", author_token).status_code == 200
    assert outage.statuses[500] == 0, outage.statuses

    outage.redis.start()
    # the events waited in the outbox: every post written during the outage reaches the reader
    wait_until(
        lambda: set(during) <= set(outage.home_ids(reader_token)),
        timeout=90,
        what="posts written during the outage in the follower's timeline",
    )
    assert outage.home_ids(reader_token) == [*reversed(during), before]
    after = outage.post(author_token, "after the outage")
    wait_until(lambda: after in outage.home_ids(reader_token), timeout=60, what="fan-out after the outage")
    # served from Redis again (no process was restarted): the reader's set holds every post
    members = {m.decode() for m in redis.Redis.from_url(outage.redis_url).zrange(timeline_key, 0, -1)}
    assert {before, *during, after} <= members
    assert outage.call("GET", "users", f"/api/v1/users/{author}", reader_token).status_code == 200
    assert outage.call("GET", "feed", "/health/ready").json()["status"] == "ok"
    assert all(proc.popen is not None and proc.popen.poll() is None for proc in outage.procs)
    assert outage.statuses[500] == 0, outage.statuses
