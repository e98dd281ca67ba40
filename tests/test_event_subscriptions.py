"""Consumers own their subscriptions (docs/events.md#subscriptions), with real processes: feed's
outbox relay, the Celery worker of a test-only consumer (tests/consumers/audit, which handles
post.created and is known to neither feed nor `shared`), a Redis of our own, the test Postgres.

Adding the consumer: it migrates (registering its subscription) and starts its worker while feed's
relay keeps running; the next post reaches it. Down for an hour: its worker stopped, posts keep
coming, then every clock the event path looks at (ledger ages, outbox ages, pruning) is moved an
hour on; the worker comes back and applies each post once. Removing it: the operator command drops
its subscription and its backlog; later posts are not routed to it and pruning keeps nothing for it.
A new version beside the old one: feed publishes both in one transaction and each goes to the
consumers registered for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import redis

from tests import harness
from tests.harness import PYTHON, ROOT, Proc, celery_worker, wait_until
from tests.test_events_reliability import delta, scrape, scrape_when_up

FEED_DIR = ROOT / "services" / "feed"
AUDIT_DIR = ROOT / "tests" / "consumers" / "audit"
LEDGER = "events:pending:audit:feed"


class Stack:
    def __init__(self, run_dir: Path):
        from shared.db_bootstrap import bootstrap

        self.run_dir = run_dir
        self.redis = harness.OwnRedis(run_dir)
        self.redis_url = self.redis.url
        self.client = redis.Redis.from_url(self.redis_url)
        database = urlsplit(os.environ["FEED_DATABASE_URL"]).path.lstrip("/")
        # the consumer's own role and schema, made the way every service's are
        audit_url = bootstrap(os.environ["ADMIN_DATABASE_URL"], database, {"audit": "audit-test-password"})["audit"]
        common = harness.stack_env(
            self.redis_url,
            CELERY_VISIBILITY_TIMEOUT="10",
            CELERY_TASK_TIME_LIMIT="8",
            CELERY_TASK_SOFT_TIME_LIMIT="6",
            EVENTS_REDELIVER_AFTER_SECONDS="60",
        )
        self.feed_env = harness.service_env(common, "feed", USERS_URL="http://127.0.0.1:9")
        self.audit_env = {
            **common,
            "DATABASE_URL": audit_url,
            "DJANGO_SETTINGS_MODULE": "audit_service.settings",
            "SERVICE_NAME": "audit",
            "PYTHONPATH": os.pathsep.join([str(AUDIT_DIR), os.environ.get("PYTHONPATH", "")]),
        }
        self.manage(FEED_DIR, self.feed_env, "migrate", "--no-input", "-v", "0")
        # feed consumes its own post.created (fan-out), but this stack runs no feed worker: its
        # subscription (registered by the migrate above) is removed, so only audit's ledger matters
        self.manage(FEED_DIR, self.feed_env, "events_subscriptions", "remove", "feed", "--purge-queue")
        self.relay_metrics_port, self.worker_metrics_port = harness.infra.free_port(), harness.infra.free_port()
        self.relay = harness.relay("feed", self.feed_env, run_dir, metrics_port=self.relay_metrics_port).start()
        self.worker: Proc | None = None
        self.db = psycopg2.connect(audit_url)
        self.db.autocommit = True
        self.feed_db = psycopg2.connect(os.environ["FEED_DATABASE_URL"])
        self.feed_db.autocommit = True

    def manage(self, cwd: Path, env: dict, *args: str) -> str:
        return harness.manage(cwd, env, *args)

    def start_worker(self) -> Proc:
        self.worker = Proc(
            "audit-worker",
            celery_worker("audit_service", "audit"),
            cwd=AUDIT_DIR,
            env={**self.audit_env, "METRICS_PORT": str(self.worker_metrics_port)},
            log_dir=self.run_dir,
        ).start()
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def feed(self, script: str) -> None:
        """feed's own code in its own process (the producer)."""
        subprocess.run([PYTHON, "manage.py", "shell", "-c", textwrap.dedent(script)], cwd=FEED_DIR, env=self.feed_env, check=True)

    def post(self, count: int = 1) -> list[str]:
        """Publish posts through feed's real post_create; returns their ids once the relay has sent them."""
        out = self.run_dir / f"posts-{uuid.uuid4().hex[:8]}.json"
        self.feed(f"""
            import json
            from posts.services import post_create
            ids = [str(post_create(author_id=4242, body=f"audited {{i}}").id) for i in range({count})]
            open({str(out)!r}, "w").write(json.dumps(ids))
        """)
        ids = json.loads(out.read_text())
        wait_until(lambda: self.unsent(ids) == 0, what="the posts' events relayed")
        return ids

    def unsent(self, post_ids: list[str]) -> int:
        with self.feed_db.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM events_outbox WHERE type = 'post.created' AND sent_at IS NULL "
                "AND data->>'post_id' = ANY(%s)",
                [post_ids],
            )
            return cursor.fetchone()[0]

    def outbox_rows(self, post_ids: list[str]) -> int:
        with self.feed_db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM events_outbox WHERE data->>'post_id' = ANY(%s)", [post_ids])
            return cursor.fetchone()[0]

    def audited(self, post_ids: list[str]) -> list[int]:
        with self.db.cursor() as cursor:
            cursor.execute(
                "SELECT post_id FROM audit_post WHERE post_id = ANY(%s) ORDER BY post_id", [[int(i) for i in post_ids]]
            )
            return [row[0] for row in cursor.fetchall()]

    def prune(self, *, retention_hours: int = 0) -> None:
        """feed's real pruning, keeping sent rows for `retention_hours` (0: every acknowledged row goes)."""
        subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", "from shared.events.prune import prune_events; prune_events()"],
            cwd=FEED_DIR,
            env={**self.feed_env, "EVENTS_OUTBOX_RETENTION_HOURS": str(retention_hours)},
            check=True,
        )

    def registry(self) -> set[str]:
        return {f.decode() for f in self.client.hgetall("events:subscriptions")}

    def close(self) -> None:
        self.stop_worker()
        self.relay.stop()
        self.db.close()
        self.feed_db.close()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack():
    with harness.own_stack("social-subs-", Stack) as s:
        yield s


def test_a_new_consumer_of_post_created_needs_no_change_or_restart_of_feed(stack):
    relay_pid = stack.relay.popen.pid
    assert not any(f.startswith("audit ") for f in stack.registry())
    before = stack.post()  # nobody subscribed yet: relayed to no one
    assert stack.client.zcard(LEDGER) == 0 and stack.client.llen("audit") == 0

    # deploy the consumer: its migrate registers the subscription, its worker starts
    stack.manage(AUDIT_DIR, stack.audit_env, "migrate", "--no-input", "-v", "0")
    assert "audit post.created 1" in stack.registry()
    relay_before = scrape_when_up(stack.relay_metrics_port)
    stack.start_worker()
    after = stack.post()
    wait_until(lambda: stack.audited(after) == [int(after[0])], what="the post audited")
    wait_until(lambda: stack.client.zcard(LEDGER) == 0, what="the event settled in the ledger")

    relay = scrape(stack.relay_metrics_port)
    assert delta(relay, relay_before, "events_published_total", type="post.created", consumer="audit") == 1
    assert stack.audited(before) == []  # committed before the consumer registered: not its event
    assert stack.relay.popen.pid == relay_pid and stack.relay.popen.poll() is None  # never restarted
    # nothing of feed or shared names the consumer: it exists only in its own code and the registry
    assert (
        subprocess.run(
            ["git", "grep", "-l", "-w", "audit", "--", "services/feed", "shared"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        == ""
    )


def test_a_consumer_down_for_an_hour_catches_up_with_nothing_lost(stack):
    stack.stop_worker()
    posts = stack.post(20)
    assert stack.client.zcard(LEDGER) == 20 and stack.client.llen("audit") == 20

    # an hour passes for everything that measures time on the event path: the ledger's publish
    # times, the outbox's commit and send times; then pruning with 1 hour of retention runs
    stack.feed(f"""
        from datetime import timedelta
        from django.db.models import F
        import redis
        from shared.events.models import OutboxEvent
        client = redis.Redis.from_url({stack.redis_url!r})
        for member, score in client.zrange({LEDGER!r}, 0, -1, withscores=True):
            client.zadd({LEDGER!r}, {{member: score - 3600}})
        OutboxEvent.objects.filter(type="post.created", data__post_id__in={posts!r}).update(
            occurred_at=F("occurred_at") - timedelta(hours=1), sent_at=F("sent_at") - timedelta(hours=1))
    """)
    stack.prune(retention_hours=0)
    assert stack.outbox_rows(posts) == 20  # pending for audit: every row kept
    # the relay publishes what has been pending longer than its grace period again (from its outbox)
    wait_until(lambda: stack.client.llen("audit") >= 40, what="the hour-old backlog published again")

    worker = stack.start_worker()
    wait_until(lambda: len(stack.audited(posts)) == 20, timeout=120, what="all 20 posts audited")
    wait_until(lambda: stack.client.zcard(LEDGER) == 0 and stack.client.llen("audit") == 0, what="backlog drained and settled")
    assert stack.audited(posts) == sorted(int(p) for p in posts)  # each exactly once
    figures = wait_until(
        lambda: (lambda m: m if delta(m, {}, "events_handled_total", type="post.created", outcome="applied") == 20 else None)(
            scrape_when_up(stack.worker_metrics_port)
        ),
        what="applied counter",
    )
    assert delta(figures, {}, "events_handled_total", type="post.created", outcome="duplicate") >= 20
    assert "event applied" in worker.log()
    stack.prune(retention_hours=0)
    assert stack.outbox_rows(posts) == 0  # acknowledged by every subscriber: pruned


def test_removing_a_consumer_stops_routing_and_drops_its_backlog(stack):
    stack.stop_worker()
    backlog = stack.post(3)
    assert stack.client.zcard(LEDGER) == 3 and stack.client.llen("audit") == 3

    out = stack.manage(AUDIT_DIR, stack.audit_env, "events_subscriptions", "remove", "audit", "--purge-queue")
    assert "removed 1 subscription(s) of audit; dropped 3 pending ledger entries and 3 queued messages" in out
    assert not any(f.startswith("audit ") for f in stack.registry())
    assert stack.client.exists(LEDGER) == 0 and stack.client.llen("audit") == 0

    relay_before = scrape(stack.relay_metrics_port)
    later = stack.post(2)
    relay = scrape(stack.relay_metrics_port)
    assert delta(relay, relay_before, "events_published_total", type="post.created", consumer="audit") == 0
    assert stack.client.exists(LEDGER) == 0 and stack.client.llen("audit") == 0
    stack.prune(retention_hours=0)
    assert stack.outbox_rows(backlog + later) == 0  # nothing is kept for a removed consumer
    assert stack.audited(backlog + later) == []


def test_a_new_version_is_published_beside_the_old_one_and_routed_by_version(stack):
    """docs/events.md#evolving-an-event: a producer publishes v2 of an event beside v1 in one
    transaction while a consumer still declares v1; the relay routes each version to the consumers
    registered for it. Here audit keeps v1 (its worker applies it) and `audit-next`, a consumer that
    has moved on, is registered for a v2 whose field is renamed (a test-only version)."""
    import base64

    from shared.events import subscriptions

    stack.stop_worker()
    stack.manage(AUDIT_DIR, stack.audit_env, "migrate", "--no-input", "-v", "0")  # audit subscribes to v1 again
    subscriptions.register(stack.client, "audit-next", [("post.created", 2)])
    assert {"audit post.created 1", "audit-next post.created 2"} <= stack.registry()
    stack.client.delete("audit", "audit-next")
    relay_before = scrape_when_up(stack.relay_metrics_port)
    out = stack.run_dir / f"versions-{uuid.uuid4().hex[:8]}.json"
    stack.feed(f"""
        import json
        from django.db import transaction
        from shared.events import publish
        from shared.events.catalogue import CATALOGUE, VERSIONS, EventType
        v1 = CATALOGUE["post.created"]
        fields = {{("mentioned_ids" if k == "mentioned_user_ids" else k): kind for k, kind in v1.fields.items()}}
        VERSIONS[("post.created", 2)] = EventType("post.created", 2, "feed", fields, "v2: mentioned_ids")
        data = {{"post_id": "777001", "author_id": "4242", "mentioned_user_ids": ["5"], "created_at": "2026-12-02T03:00:00Z"}}
        with transaction.atomic():
            first = publish("post.created", data)
            renamed = {{("mentioned_ids" if k == "mentioned_user_ids" else k): v for k, v in data.items()}}
            second = publish("post.created", renamed, version=2)
        open({str(out)!r}, "w").write(json.dumps([str(first), str(second)]))
    """)
    v1_id, v2_id = json.loads(out.read_text())
    wait_until(lambda: stack.unsent(["777001"]) == 0, what="both versions relayed")

    def queued(queue: str) -> list[dict]:
        return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in stack.client.lrange(queue, 0, -1)]

    (old,) = queued("audit")
    (new,) = queued("audit-next")
    assert (old["id"], old["version"], old["data"]["mentioned_user_ids"]) == (v1_id, 1, ["5"])
    assert (new["id"], new["version"], new["data"]["mentioned_ids"]) == (v2_id, 2, ["5"])
    assert "mentioned_user_ids" not in new["data"]
    relay = scrape(stack.relay_metrics_port)
    assert delta(relay, relay_before, "events_published_total", type="post.created", consumer="audit") == 1
    assert delta(relay, relay_before, "events_published_total", type="post.created", consumer="audit-next") == 1

    stack.start_worker()  # the consumer that still declares v1 applies it
    wait_until(lambda: stack.audited(["777001"]) == [777001], what="v1 applied by audit")
    wait_until(lambda: stack.client.zcard(LEDGER) == 0, what="audit's v1 settled")
    stack.stop_worker()
    for consumer in ("audit", "audit-next"):
        stack.manage(AUDIT_DIR, stack.audit_env, "events_subscriptions", "remove", consumer, "--purge-queue")
