"""The event backbone with real processes: users' relay, notifications' Celery worker, a Redis
of our own (so stopping it disturbs no other test). Producers are the users service's own code
run in a separate process; results are read from the notifications schema."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from tests import harness
from tests.harness import PYTHON, ROOT, Proc, celery_worker, wait_until

USERS_DIR = ROOT / "services" / "users"
PRODUCER = ROOT / "tests" / "users_producer.py"
NOTIFICATIONS_DIR = ROOT / "services" / "notifications"


class Stack:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.redis = harness.OwnRedis(run_dir)
        self.redis_url = self.redis.url
        common = harness.stack_env(
            self.redis_url,
            CELERY_VISIBILITY_TIMEOUT="10",
            CELERY_TASK_TIME_LIMIT="8",
            CELERY_TASK_SOFT_TIME_LIMIT="6",
            EVENTS_RETRY_BACKOFF="0.05",
            EVENTS_RETRY_BACKOFF_MAX="0.2",
            EVENTS_MAX_RETRIES="3",
            # ack ledger grace: past visibility (10 s) + hard limit (8 s), and past the queueing time of
            # the bursts below, so normal runs redeliver nothing; a lost message returns after ~1 min
            EVENTS_REDELIVER_AFTER_SECONDS="60",
            PUSH_PROVIDER="log",
        )
        self.users_env = harness.service_env(common, "users")
        self.notifications_env = harness.service_env(common, "notifications", USERS_URL="http://127.0.0.1:9")
        for cwd, env in [(USERS_DIR, self.users_env), (NOTIFICATIONS_DIR, self.notifications_env)]:
            harness.manage(cwd, env, "migrate", "--no-input", "-v", "0")
        # feed subscribes to user.* too but runs no worker here (a registered consumer that is down):
        # its subscriptions are registered as its deploy would (docs/events.md#subscriptions)
        harness.manage(ROOT / "services" / "feed", harness.service_env(common, "feed"), "events_subscriptions", "register")
        self.worker_metrics_port, self.relay_metrics_port = harness.infra.free_port(), harness.infra.free_port()
        self.relay = harness.relay("users", self.users_env, run_dir, metrics_port=self.relay_metrics_port)
        self.worker = self._worker()
        self.db = psycopg2.connect(os.environ["NOTIFICATIONS_DATABASE_URL"])
        self.db.autocommit = True

    def _worker(self) -> Proc:
        return Proc(
            "notifications-worker",
            celery_worker("notifications_service", "notifications"),
            cwd=NOTIFICATIONS_DIR,
            env={**self.notifications_env, "METRICS_PORT": str(self.worker_metrics_port)},
            log_dir=self.run_dir,
        )

    def run_producer(self, *args: object, check: bool = True) -> tuple[int, Any]:
        """Run users code in its own process (the producer): a command of tests/users_producer.py.
        Returns its exit status and its JSON result (None if it wrote none)."""
        import subprocess

        out = self.run_dir / f"producer-{uuid.uuid4().hex[:8]}.json"
        code = subprocess.run(
            [PYTHON, str(PRODUCER), "--out", str(out), *map(str, args)], cwd=USERS_DIR, env=self.users_env, check=check
        ).returncode
        return code, json.loads(out.read_text()) if out.exists() else None

    def produce(self, *args: object) -> Any:
        return self.run_producer(*args)[1]

    def make_users(self, count: int) -> list[int]:
        return self.produce("make-users", uuid.uuid4().hex[:8], count)

    def follow_all(self, follower_ids: list[int], followee_id: int) -> None:
        self.produce("follow", followee_id, *follower_ids)

    def notifications(self, recipient_id: int) -> list[tuple]:
        with self.db.cursor() as cursor:
            cursor.execute("SELECT actor_id, kind FROM notification WHERE recipient_id = %s ORDER BY actor_id", [recipient_id])
            return cursor.fetchall()

    def count(self, recipient_id: int) -> int:
        return len(self.notifications(recipient_id))

    def close(self) -> None:
        for proc in (self.worker, self.relay):
            proc.stop()
        self.db.close()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack():
    with harness.own_stack("social-events-", Stack) as s:
        yield s


@pytest.fixture
def running(stack):
    for proc in (stack.relay, stack.worker):
        if proc.popen is None or proc.popen.poll() is not None:
            proc.start()
    return stack


def test_a_follow_becomes_one_notification_with_the_request_id_in_the_worker_log(running):
    star, fan = running.make_users(2)
    running.produce("follow", star, fan, "--request-id", "req-sys-follow-1")
    wait_until(lambda: running.count(star) == 1, what="follow notification")
    assert running.notifications(star) == [(fan, "follow")]
    wait_until(lambda: "req-sys-follow-1" in running.worker.log(), what="request id in worker log")
    line = next(
        json.loads(x)
        for x in running.worker.log().splitlines()
        if "req-sys-follow-1" in x and x.startswith("{") and "event applied" in x
    )
    assert (line["request_id"], line["event_type"], line["service"]) == ("req-sys-follow-1", "user.followed", "notifications")


def scrape(port: int) -> dict[tuple, float]:
    """A real /metrics scrape: {(sample name, sorted labels): value}."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_when_up(port: int) -> dict[tuple, float]:
    def attempt():
        try:
            return scrape(port) or {("up", ()): 1.0}
        except OSError:
            return None

    return wait_until(attempt, what=f"/metrics on port {port}")


def delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_worker_and_relay_metrics_count_every_event_exactly(running):
    star, *fans = running.make_users(6)
    worker_before = scrape_when_up(running.worker_metrics_port)
    relay_before = scrape_when_up(running.relay_metrics_port)
    running.follow_all(fans, star)
    wait_until(lambda: running.count(star) == 5, what="5 notifications")
    followed = {"type": "user.followed"}
    # the counter moves right after the handler's commit: wait for it, then check every figure exactly
    worker = wait_until(
        lambda: (lambda m: m if delta(m, worker_before, "events_handled_total", outcome="applied", **followed) >= 5 else None)(
            scrape(running.worker_metrics_port)
        ),
        what="handled counter",
    )
    relay = scrape(running.relay_metrics_port)
    assert delta(worker, worker_before, "events_handled_total", outcome="applied", **followed) == 5
    assert delta(worker, worker_before, "events_handled_total", outcome="duplicate", **followed) == 0
    assert delta(worker, worker_before, "events_failed_total", **followed) == 0
    assert delta(worker, worker_before, "events_dead_letters_total", **followed) == 0
    assert delta(worker, worker_before, "events_handler_duration_seconds_count", **followed) == 5
    assert delta(worker, worker_before, "events_consume_lag_seconds_count", **followed) == 5
    assert delta(relay, relay_before, "events_published_total", consumer="notifications", **followed) == 5
    assert delta(relay, relay_before, "events_published_total", consumer="feed", **followed) == 5
    assert delta(relay, relay_before, "events_relay_lag_seconds_count", **followed) == 5


def test_the_same_envelope_published_twice_makes_one_notification(running):
    star, fan = running.make_users(2)
    running.follow_all([fan], star)
    wait_until(lambda: running.count(star) == 1, what="first delivery")
    # publish the very same envelope again, as a relay that crashed before marking it sent would
    assert running.produce("republish", fan) == 1
    other_star, other_fan = running.make_users(2)
    running.follow_all([other_fan], other_star)  # a later event: once it is in, the duplicate was handled
    wait_until(lambda: running.count(other_star) == 1, what="later event")
    wait_until(lambda: "event duplicate" in running.worker.log(), what="duplicate seen by the worker")
    assert running.notifications(star) == [(fan, "follow")]


def test_producer_killed_right_after_commit_still_delivers(running):
    star, fan = running.make_users(2)
    running.relay.stop()  # nothing may be published by anyone but the relay
    code, _ = running.run_producer("follow", star, fan, "--die", check=False)  # SIGKILLed right after the commit
    assert code == -9
    assert running.count(star) == 0
    running.relay.start()
    wait_until(lambda: running.count(star) == 1, what="delivery after producer death")
    assert running.notifications(star) == [(fan, "follow")]


def test_a_message_lost_between_brpop_and_its_unacked_record_is_redelivered_once(running):
    """kombu's Redis fetch is BRPOP, then (second round trip) the unacked record: a worker killed in
    between loses the message (celery/kombu#305). Reproduced deterministically: take the message off
    the queue ourselves, as that worker would have, and never record or acknowledge it."""
    import base64

    client = redis.Redis.from_url(running.redis_url)
    star, fan = running.make_users(2)
    running.worker.stop()  # nobody else may take the message
    client.delete("notifications")
    running.follow_all([fan], star)
    message = wait_until(lambda: client.brpop(["notifications"], timeout=1), what="the event on the queue")
    envelope = json.loads(base64.b64decode(json.loads(message[1])["body"]))[0][0]
    assert (envelope["type"], envelope["data"]) == ("user.followed", {"follower_id": str(fan), "followee_id": str(star)})
    ledger_key = "events:pending:notifications:users"
    assert client.zscore(ledger_key, envelope["id"]) is not None  # published, never acknowledged
    assert client.llen("notifications") == 0 and running.count(star) == 0  # gone: only the ledger knows

    # a relay with a short grace period (the suite's relay waits 60 s), and the worker back
    running.relay.stop()
    metrics_port = harness.infra.free_port()
    fast_env = {**running.users_env, "EVENTS_REDELIVER_AFTER_SECONDS": "2"}
    fast_relay = harness.relay("users", fast_env, running.run_dir, metrics_port=metrics_port, name="users-relay-fast")
    running.worker = running._worker().start()  # a fresh worker: its counters start at zero
    fast_relay.start()

    def figures():
        relay, worker = scrape(metrics_port), scrape(running.worker_metrics_port)
        return (
            delta(relay, {}, "events_redelivered_total", consumer="notifications", type="user.followed"),
            delta(worker, {}, "events_handled_total", outcome="applied", type="user.followed"),
            delta(worker, {}, "events_handled_total", outcome="duplicate", type="user.followed"),
        )

    try:
        wait_until(lambda: running.count(star) == 1, what="the lost event, redelivered")
        wait_until(lambda: client.zscore(ledger_key, envelope["id"]) is None, what="the ledger entry settled")
        scrape_when_up(metrics_port)
        # every redelivery after the first reaches a worker that has applied the event: an inbox hit
        redelivered, applied, duplicates = wait_until(
            lambda: (lambda f: f if f[0] >= 1 and f[2] == f[0] - 1 else None)(figures()), what="every redelivery handled"
        )
    finally:
        fast_relay.stop()
    assert applied == 1
    assert duplicates == redelivered - 1
    assert running.notifications(star) == [(fan, "follow")]
    with running.db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_inbox WHERE event_id = %s", [envelope["id"]])
        assert cursor.fetchone()[0] == 1
    assert "events redelivered" in fast_relay.log() and envelope["id"] in fast_relay.log()


def test_a_lost_message_is_redelivered_without_waiting_out_the_grace_period(running):
    """The relay's ledger check with EVENTS_LOST_AFTER_SECONDS=0 (the grace period stays 60 s): an
    event whose message waits in the queue, or is held unacknowledged (kombu's `unacked` hash), is
    not published again; once it is in neither place (taken off by BRPOP and never recorded: the
    SIGKILLed worker of celery/kombu#305) it is published again at once, and applied once."""
    import base64

    client = redis.Redis.from_url(running.redis_url)
    star, fan = running.make_users(2)
    running.worker.stop()  # nobody else may take the message
    client.delete("notifications")
    running.follow_all([fan], star)
    ledger_key = "events:pending:notifications:users"

    def queued() -> list[str]:
        return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]["id"] for m in client.lrange("notifications", 0, -1)]

    event_id = wait_until(lambda: (queued() or [None])[0], what="the event on the queue")
    assert client.zscore(ledger_key, event_id) is not None

    def check() -> None:  # one redelivery check of the users relay, as its loop runs it
        running.produce("redeliver", "--lost-after", "0")

    check()  # waiting in the queue: not lost
    assert queued() == [event_id]
    # delivered and unacknowledged, as kombu records it for a live worker: not lost either
    _, message = client.brpop(["notifications"], timeout=5)
    client.hset("unacked", "tag-lost-test", json.dumps([json.loads(message), "notifications", "notifications"]))
    check()
    assert queued() == []
    client.hdel("unacked", "tag-lost-test")  # and now nowhere: lost in transit
    check()
    assert queued() == [event_id]  # published again, long before the 60 s grace period
    running.worker = running._worker().start()
    wait_until(lambda: running.count(star) == 1, what="the lost event, redelivered")
    wait_until(lambda: client.zscore(ledger_key, event_id) is None, what="the ledger entry settled")
    assert running.notifications(star) == [(fan, "follow")]


def test_pruning_keeps_outbox_rows_a_consumer_has_not_acknowledged(running):
    client = redis.Redis.from_url(running.redis_url)
    star, fan, other = running.make_users(3)
    running.follow_all([fan, other], star)
    wait_until(lambda: running.count(star) == 2, what="both follows handled")
    wait_until(lambda: client.zcard("events:pending:notifications:users") == 0, what="both settled by notifications")
    # feed has no worker here: both events stay pending for it; pretend feed settled only one of them
    events = running.produce("followed-events", star)
    settled, pending = events[str(fan)], events[str(other)]
    assert client.zscore("events:pending:feed:users", pending) is not None
    client.zrem("events:pending:feed:users", settled)
    assert running.produce("prune-aged", settled, pending, "--age-days", 30) == [pending]


def test_sigkilled_worker_loses_and_duplicates_nothing(running):
    star, *fans = running.make_users(301)
    # queue all 300 first: a worker that keeps up with the producer would leave nothing in flight to kill
    running.worker.stop()
    running.follow_all(fans, star)
    client = redis.Redis.from_url(running.redis_url)
    wait_until(lambda: client.llen("notifications") >= 300, what="300 events queued")  # + restored push tasks
    running.worker = running._worker().start()
    wait_until(lambda: running.count(star) >= 20, what="worker busy", interval=0.02)
    running.worker.kill()
    assert running.count(star) < 300
    running.worker = running._worker().start()
    wait_until(lambda: running.count(star) == 300, timeout=120, what="all 300 after restart")
    assert running.notifications(star) == [(fan, "follow") for fan in sorted(fans)]


def test_redis_stopped_during_a_burst_of_1000_follows(running):
    star, *fans = running.make_users(1001)
    import threading

    producer = threading.Thread(target=running.follow_all, args=(fans, star))
    producer.start()
    wait_until(lambda: running.count(star) >= 50, what="burst under way", interval=0.02)
    running.redis.stop()
    seen_during_outage = running.count(star)
    running.redis.start()
    producer.join()
    wait_until(lambda: running.count(star) == 1000, timeout=180, what="all 1000 after Redis came back")
    assert seen_during_outage < 1000
    assert running.notifications(star) == [(fan, "follow") for fan in sorted(fans)]


def test_a_poison_event_is_dead_lettered_and_does_not_block_the_queue(running):
    star, fan = running.make_users(2)
    poison_id = str(uuid.uuid4())
    before = scrape_when_up(running.worker_metrics_port)
    client = redis.Redis.from_url(running.redis_url)
    running.produce("send-poison", poison_id)  # a well-formed envelope whose handler always fails
    running.follow_all([fan], star)
    wait_until(lambda: running.count(star) == 1, what="later event handled despite the poison one")
    with running.db.cursor() as cursor:

        def dead():
            cursor.execute("SELECT type, attempts, error FROM events_dead_letter WHERE event_id = %s", [poison_id])
            return cursor.fetchall()

        rows = wait_until(dead, what="dead letter")
    assert [(t, a) for t, a, _ in rows] == [("user.followed", 4)]
    assert "out of range" in rows[0][2]
    assert client.llen("notifications") == 0
    # 4 attempts: 3 retried, the 4th given up (EVENTS_MAX_RETRIES=3), plus the good event applied
    after = wait_until(
        lambda: (lambda m: m if delta(m, before, "events_handled_total", outcome="dead", type="user.followed") else None)(
            scrape(running.worker_metrics_port)
        ),
        what="dead-letter metric",
    )
    assert delta(after, before, "events_handled_total", outcome="dead", type="user.followed") == 1
    assert delta(after, before, "events_dead_letters_total", type="user.followed") == 1
    assert delta(after, before, "events_handled_total", outcome="retry", type="user.followed") == 3
    assert delta(after, before, "events_failed_total", type="user.followed") == 4
    assert delta(after, before, "events_handled_total", outcome="applied", type="user.followed") == 1


def test_stranded_messages_are_swept_for_well_within_the_visibility_timeout(monkeypatch):
    from shared.events.celery_config import celery_config

    for visibility, interval in [(3600, 10), (10, 1), (60, 6)]:
        monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", str(visibility))
        options = celery_config("x")["broker_transport_options"]
        assert (
            options["visibility_timeout"],
            options["unacked_restore_interval"],
            options["unacked_restore_throttle"],
            options["unacked_mutex_expire"],
        ) == (visibility, interval, 1, 3 * interval)
