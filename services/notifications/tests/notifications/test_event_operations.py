"""Operator tools over the real database and broker Redis: `manage.py events_replay` (dead letters
back through the inbox) and `manage.py events_status`, and the backlog gauges the worker serves."""

import io
import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from notifications.models import Notification

from shared.events import Event, envelope_to, ledger
from shared.events.celery_app import dead_letter
from shared.events.models import DeadLetter, InboxEvent, OutboxEvent

pytestmark = pytest.mark.django_db


def envelope(data: dict, *, type_: str = "user.followed", event_id: uuid.UUID | None = None) -> dict:
    return envelope_to(
        Event(
            id=event_id or uuid.uuid4(),
            type=type_,
            version=1,
            occurred_at=timezone.now(),
            producer="users",
            data=data,
            request_id="req-replay",
        )
    )


def dead(env: dict, *, error: str = "OperationalError: server closed the connection") -> DeadLetter:
    """A dead letter recorded exactly as the worker records one after its last retry."""
    dead_letter(task="events.handle", payload=env, error=error, attempts=6, event_id=uuid.UUID(env["id"]), type_=env["type"])
    return DeadLetter.objects.get(event_id=env["id"])


def replay(*args: str) -> str:
    out = io.StringIO()
    call_command("events_replay", *args, stdout=out)
    return out.getvalue()


def follows() -> list[tuple]:
    return list(Notification.objects.order_by("id").values_list("recipient_id", "kind", "actor_id"))


def test_replay_by_id_applies_the_event_once_and_removes_the_dead_letter():
    env = envelope({"follower_id": "11", "followee_id": "22"})
    row = dead(env)
    out = replay("--id", str(row.pk))
    assert out.splitlines()[0].startswith("applied") and env["id"] in out
    assert "1 dead letter(s): applied 1" in out
    assert follows() == [(22, "follow", 11)]
    assert not DeadLetter.objects.exists()
    assert InboxEvent.objects.filter(event_id=env["id"]).count() == 1
    # run again: nothing left to replay
    assert "nothing matched" in replay("--id", str(row.pk))
    assert follows() == [(22, "follow", 11)]


def test_replaying_an_event_the_inbox_already_has_applies_nothing_twice():
    env = envelope({"follower_id": "11", "followee_id": "22"})
    dead(env)
    replay("--id", env["id"])  # by event id
    dead(env)  # the same event dead-lettered again (e.g. a redelivery that failed)
    out = replay("--type", "user.followed")
    assert out.splitlines()[0].startswith("duplicate")
    assert follows() == [(22, "follow", 11)]
    assert not DeadLetter.objects.exists()


def test_dry_run_lists_and_changes_nothing():
    env = envelope({"follower_id": "11", "followee_id": "22"})
    row = dead(env)
    out = replay("--all", "--dry-run")
    assert out.splitlines()[0].startswith("would replay") and f"#{row.pk} user.followed" in out
    assert follows() == []
    assert DeadLetter.objects.get().attempts == 6
    assert not InboxEvent.objects.exists()


def test_selection_by_type_and_age():
    old = dead(envelope({"follower_id": "1", "followee_id": "2"}))
    DeadLetter.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    new = dead(envelope({"follower_id": "3", "followee_id": "4"}))
    liked = dead(envelope({"post_id": "7", "author_id": "5", "liker_id": "6"}, type_="post.liked"))
    assert "nothing matched" in replay("--type", "user.deleted")
    out = replay("--older-than", "1d", "--dry-run")
    assert f"#{old.pk} " in out and f"#{new.pk} " not in out and f"#{liked.pk} " not in out
    out = replay("--newer-than", "1h", "--type", "post.liked")
    assert out.splitlines()[0].startswith("applied") and f"#{liked.pk} " in out
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {old.pk, new.pk}
    assert follows() == [(5, "like", 6)]


def test_an_event_that_fails_again_stays_a_dead_letter_with_the_new_error():
    # a well-formed event whose handler fails every time: the id overflows bigint
    env = envelope({"follower_id": "99999999999999999999", "followee_id": "22"})
    row = dead(env)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 dead letter"):
        call_command("events_replay", "--id", str(row.pk), stdout=out)
    assert out.getvalue().splitlines()[0].startswith("failed")
    kept = DeadLetter.objects.get(pk=row.pk)
    assert kept.attempts == 7 and "out of range" in kept.error
    assert not InboxEvent.objects.filter(event_id=env["id"]).exists()
    assert follows() == []


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "nothing selected"),
        (["--older-than", "yesterday"], "bad age"),
        (["--id", "12abc"], "bad --id"),
        (["--all", "--limit", "0"], "--limit"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_replayed(args, message):
    row = dead(envelope({"follower_id": "11", "followee_id": "22"}))
    with pytest.raises(CommandError, match=message):
        replay(*args)
    assert DeadLetter.objects.get().pk == row.pk and follows() == []


def broker() -> redis.Redis:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    return client


def test_events_status_reports_outbox_ledger_queue_and_dead_letters():
    client = broker()
    now = timezone.now()
    OutboxEvent.objects.create(
        event_id=uuid.uuid4(), type="post.deleted", version=1, data={}, occurred_at=now - timedelta(seconds=120)
    )
    OutboxEvent.objects.create(
        event_id=uuid.uuid4(),
        type="post.deleted",
        version=1,
        data={},
        occurred_at=now - timedelta(seconds=300),
        sent_at=now - timedelta(seconds=30),
    )
    client.zadd(
        ledger.pending_key("notifications", "users"), {str(uuid.uuid4()): time.time() - 90, str(uuid.uuid4()): time.time()}
    )
    from notifications_service.celery import app

    app.send_task("events.handle", args=[envelope({"follower_id": "1", "followee_id": "2"})], queue="notifications")
    dead(envelope({"follower_id": "3", "followee_id": "4"}))
    out = io.StringIO()
    call_command("events_status", "--json", stdout=out)
    status = json.loads(out.getvalue())
    assert status["outbox"]["unsent"] == 1 and status["outbox"]["oldest_unsent_age"] >= 120
    assert status["outbox"]["last_sent_at"] == pytest.approx((now - timedelta(seconds=30)).timestamp(), abs=1)
    by_producer = {p["producer"]: p for p in status["consumer"]}
    assert set(by_producer) == {"feed", "users"}
    assert by_producer["users"]["pending"] == 2 and by_producer["users"]["oldest_pending_age"] >= 90
    assert by_producer["feed"]["pending"] == 0
    assert status["queue"] == {"queue": "notifications", "length": 1, "tasks": {"events.handle": 1}, "scanned": 1}
    assert status["dead_letters"] == {"user.followed": 1}
    out = io.StringIO()
    call_command("events_status", stdout=out)
    text = out.getvalue()
    assert "unsent 1" in text and "from users" in text and "pending 2" in text and "dead letters    1" in text


@pytest.mark.django_db(transaction=True)
def test_backlog_gauges_as_a_worker_serves_them():
    """The collector the worker registers, scraped from another thread as the metrics server does."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from shared.events.backlog import BacklogCollector

    client = broker()
    OutboxEvent.objects.create(
        event_id=uuid.uuid4(), type="post.deleted", version=1, data={}, occurred_at=timezone.now() - timedelta(seconds=60)
    )
    client.zadd(ledger.pending_key("notifications", "feed"), {str(uuid.uuid4()): time.time() - 30})
    for _ in range(3):
        client.lpush("notifications", json.dumps({"body": "e30=", "headers": {"task": "notifications.push_deliver"}}))
    dead(envelope({"follower_id": "3", "followee_id": "4"}))
    registry = CollectorRegistry()
    registry.register(BacklogCollector("notifications", settings.REDIS_URL, tasks=["events.handle"]))
    scraped: list[bytes] = []
    thread = threading.Thread(target=lambda: scraped.append(generate_latest(registry)))
    thread.start()
    thread.join(timeout=30)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped[0].decode())
        for s in family.samples
    }
    assert samples[("events_backlog_up", (("source", "postgres"),))] == 1
    assert samples[("events_backlog_up", (("source", "redis"),))] == 1
    assert samples[("events_outbox_unsent", (("producer", "notifications"),))] == 1
    assert samples[("events_outbox_oldest_unsent_age_seconds", (("producer", "notifications"),))] >= 60
    assert samples[("events_consumer_pending", (("consumer", "notifications"), ("producer", "feed")))] == 1
    assert samples[("events_consumer_oldest_pending_age_seconds", (("consumer", "notifications"), ("producer", "feed")))] >= 30
    assert samples[("events_consumer_pending", (("consumer", "notifications"), ("producer", "users")))] == 0
    assert samples[("celery_queue_length", (("queue", "notifications"),))] == 3
    assert samples[("celery_queue_tasks", (("queue", "notifications"), ("task", "notifications.push_deliver")))] == 3
    assert samples[("celery_queue_tasks", (("queue", "notifications"), ("task", "events.handle")))] == 0
    assert samples[("events_dead_letters_stored", (("consumer", "notifications"), ("type", "user.followed")))] == 1
    assert samples[("events_dead_letters_stored_all", (("consumer", "notifications"),))] == 1


@pytest.mark.django_db(transaction=True)
def test_backlog_gauges_report_an_unreachable_broker_instead_of_failing_the_scrape():
    from prometheus_client import CollectorRegistry, generate_latest

    from shared.events.backlog import BacklogCollector

    registry = CollectorRegistry()
    registry.register(BacklogCollector("notifications", "redis://127.0.0.1:9/0"))
    text = generate_latest(registry).decode()
    assert 'events_backlog_up{source="redis"} 0.0' in text and 'events_backlog_up{source="postgres"} 1.0' in text
    assert "celery_queue_length" not in text and "events_outbox_unsent{" in text
