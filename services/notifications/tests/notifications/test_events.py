"""The handlers, fed real envelopes through the inbox exactly as the worker does."""

import uuid

import pytest
from devices.models import Delivery, Device
from django.core.cache import cache
from django.utils import timezone
from notifications.models import Notification

from shared.events.catalogue import EventSchemaError
from shared.events.models import InboxEvent

pytestmark = pytest.mark.django_db


def rows():
    return list(Notification.objects.order_by("id").values_list("recipient_id", "kind", "actor_id", "post_id"))


def test_user_followed_makes_one_follow_notification_for_the_followee(deliver):
    Device.objects.create(user_id=22, platform="ios", token="tok-22", created_at=timezone.now())  # else no push is queued
    applied, envelope = deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    assert applied is True
    assert rows() == [(22, "follow", 11, None)]
    note = Notification.objects.get()
    assert str(note.event_id) == envelope["id"] and note.read_at is None
    assert list(Delivery.objects.values_list("user_id", "notification_id", "status")) == [(22, note.id, "pending")]
    assert InboxEvent.objects.filter(event_id=envelope["id"]).count() == 1


def test_the_same_event_twice_makes_one_notification(deliver):
    event_id = uuid.uuid4()
    assert deliver("user.followed", {"follower_id": "11", "followee_id": "22"}, event_id=event_id)[0] is True
    assert deliver("user.followed", {"follower_id": "11", "followee_id": "22"}, event_id=event_id)[0] is False
    assert rows() == [(22, "follow", 11, None)]
    assert Delivery.objects.count() == 1


def test_post_liked_notifies_the_author_but_not_for_own_post(deliver):
    deliver("post.liked", {"post_id": "7", "author_id": "22", "liker_id": "11"}, producer="feed")
    deliver("post.liked", {"post_id": "8", "author_id": "22", "liker_id": "22"}, producer="feed")
    assert rows() == [(22, "like", 11, 7)]


def test_post_created_notifies_each_mentioned_user_but_not_the_author(deliver):
    deliver(
        "post.created",
        {
            "post_id": "9",
            "author_id": "11",
            "mentioned_user_ids": ["33", "22", "11", "22"],
            "created_at": "2025-01-01T00:00:00+00:00",
        },
        producer="feed",
    )
    deliver(
        "post.created",
        {"post_id": "10", "author_id": "11", "mentioned_user_ids": [], "created_at": "2025-01-01T00:00:00+00:00"},
        producer="feed",
    )
    assert rows() == [(22, "mention", 11, 9), (33, "mention", 11, 9)]


def test_post_deleted_removes_its_notifications(deliver):
    deliver("post.liked", {"post_id": "7", "author_id": "22", "liker_id": "11"}, producer="feed")
    deliver("post.liked", {"post_id": "8", "author_id": "22", "liker_id": "11"}, producer="feed")
    deliver("post.deleted", {"post_id": "7", "author_id": "22"}, producer="feed")
    assert rows() == [(22, "like", 11, 8)]


def test_user_deleted_removes_their_notifications_devices_and_those_they_caused(deliver):
    now = timezone.now()
    Device.objects.create(user_id=22, platform="ios", token="tok22", created_at=now)
    Device.objects.create(user_id=33, platform="ios", token="tok33", created_at=now)
    deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    deliver("user.followed", {"follower_id": "22", "followee_id": "33"})
    deliver("user.followed", {"follower_id": "11", "followee_id": "33"})
    deliver("user.deleted", {"user_id": "22"})
    assert rows() == [(33, "follow", 11, None)]
    assert list(Device.objects.values_list("user_id", flat=True)) == [33]
    assert list(Delivery.objects.values_list("user_id", flat=True)) == [33]


def test_user_updated_refreshes_the_cached_actor_profile(deliver):
    cache.set("actor:v2:11", {"id": 11, "username": "old", "display_name": "Old", "avatar_url": ""})
    deliver("user.updated", {"user_id": "11", "username": "ann", "display_name": "Ann", "avatar_url": "https://a/b.png"})
    assert cache.get("actor:v2:11") == {"id": 11, "username": "ann", "display_name": "Ann", "avatar_url": "https://a/b.png"}


def test_an_event_without_a_handler_here_is_refused_and_writes_nothing(deliver):
    with pytest.raises(EventSchemaError, match=r"no handler for user\.registered"):
        deliver("user.registered", {"user_id": "1", "username": "x"})
    assert InboxEvent.objects.count() == 0 and rows() == []


def test_a_failing_handler_rolls_back_its_inbox_row(deliver):
    # an actor id that does not fit bigint makes the insert fail inside the handler's transaction
    with pytest.raises(Exception):  # noqa: B017 - the database error type is not the point
        deliver("user.followed", {"follower_id": "9999999999999999999", "followee_id": "22"})
    assert InboxEvent.objects.count() == 0 and rows() == []


def test_a_statement_past_the_soft_time_limit_fails_the_handler_and_writes_nothing(deliver, monkeypatch):
    """The event transaction runs with statement_timeout = the soft task limit: a query stuck in
    Postgres (which a worker's own soft limit cannot interrupt) fails the handler, whose writes and
    inbox row roll back, so the event is retried."""
    from django.db import OperationalError, connection

    from shared.events import inbox

    def stuck(event):
        Notification.objects.create(
            recipient_id=22, kind="follow", actor_id=11, event_id=event.id, created_at=event.occurred_at, actor_ids=[11]
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(30)")

    monkeypatch.setenv("CELERY_TASK_SOFT_TIME_LIMIT", "1")
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "2")
    monkeypatch.setitem(inbox._HANDLERS, ("user.followed", 1), [stuck])
    event_id = uuid.uuid4()
    with pytest.raises(OperationalError, match="statement timeout"):
        deliver("user.followed", {"follower_id": "11", "followee_id": "22"}, event_id=event_id)
    assert rows() == []
    assert not InboxEvent.objects.filter(event_id=event_id).exists()
    with connection.cursor() as cursor:  # SET LOCAL: the setting ended with the transaction
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] != "1s"
