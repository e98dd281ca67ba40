"""Events in and out: handlers applied once through the inbox; posts and likes write the outbox."""

import json
import uuid

import pytest
from authors.selectors import authors_by_ids
from posts.models import Post
from timelines import store
from timelines.models import AuthorStats, TimelineEntry

from shared.events.inbox import dispatch
from shared.events.models import OutboxEvent

pytestmark = pytest.mark.django_db


def envelope(type_: str, data: dict, event_id: str | None = None) -> dict:
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type_,
        "version": 1,
        "occurred_at": "2025-01-01T00:00:00Z",
        "producer": "users",
        "data": data,
        "request_id": "",
    }


def outbox() -> list[tuple[str, dict]]:
    return [(e.type, e.data) for e in OutboxEvent.objects.order_by("seq")]


def test_post_create_like_and_delete_write_their_events(person):
    alice, bob = person("alice"), person("bob")
    response = alice.api.post("/api/v1/posts", data=json.dumps({"body": f"hi @{bob.username}"}), content_type="application/json")
    post = Post.objects.get()
    bob.api.post(f"/api/v1/posts/{post.id}/like")
    bob.api.post(f"/api/v1/posts/{post.id}/like")  # a repeat emits nothing
    alice.api.delete(f"/api/v1/posts/{post.id}")
    assert outbox() == [
        (
            "post.created",
            {
                "post_id": str(post.id),
                "author_id": str(alice.id),
                "mentioned_user_ids": [str(bob.id)],
                "created_at": response.json()["created_at"],
            },
        ),
        ("post.liked", {"post_id": str(post.id), "author_id": str(alice.id), "liker_id": str(bob.id)}),
        ("post.deleted", {"post_id": str(post.id), "author_id": str(alice.id)}),
    ]


def test_rejected_writes_emit_nothing(person):
    alice, bob = person("alice"), person("bob")
    post_id = alice.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json").json()["id"]
    OutboxEvent.objects.all().delete()
    bob.api.delete(f"/api/v1/posts/{post_id}")
    bob.api.post("/api/v1/posts/123/like")
    alice.api.post("/api/v1/posts", data=json.dumps({"body": ""}), content_type="application/json")
    assert outbox() == []


def test_user_followed_is_applied_once_however_often_delivered(person):
    author, fan = person("author"), person("fan")
    post_id = int(author.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json").json()["id"])
    event = envelope("user.followed", {"follower_id": str(fan.id), "followee_id": str(author.id)})
    assert dispatch(event) is True
    assert dispatch(event) is False
    assert AuthorStats.objects.get(author_id=author.id).followers_count == 1
    assert list(TimelineEntry.objects.filter(user_id=fan.id).values_list("post_id", flat=True)) == [post_id]
    dispatch(envelope("user.unfollowed", {"follower_id": str(fan.id), "followee_id": str(author.id)}))
    assert AuthorStats.objects.get(author_id=author.id).followers_count == 0
    assert not TimelineEntry.objects.filter(user_id=fan.id).exists()


def test_user_updated_refreshes_the_cached_profile(person):
    alice = person("alice")
    authors_by_ids(ids=[alice.id])
    dispatch(
        envelope(
            "user.updated",
            {"user_id": str(alice.id), "username": "alice_new", "display_name": "A", "avatar_url": "https://img.example/a.png"},
        )
    )
    assert authors_by_ids(ids=[alice.id]) == (
        {
            alice.id: {
                "id": str(alice.id),
                "username": "alice_new",
                "display_name": "A",
                "avatar_url": "https://img.example/a.png",
                "placeholder": False,
            }
        },
        False,
    )


def test_user_deleted_purges_posts_and_forgets_the_profile(person):
    alice = person("alice")
    alice.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json")
    authors_by_ids(ids=[alice.id])
    assert store.client().get(f"profile:v2:{alice.id}") is not None
    dispatch(envelope("user.deleted", {"user_id": str(alice.id)}))
    assert Post.objects.count() == 0
    assert store.client().get(f"profile:v2:{alice.id}") is None


@pytest.fixture
def eager_tasks():
    """Run the fan-out pages the handler queues in this process (the real task code, no broker)."""
    from feed_service.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_post_created_and_deleted_are_applied_once_however_often_delivered(person, eager_tasks):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    fan.api.get("/api/v1/feed")  # fan's Redis timeline exists, so fan-out writes it
    data = author.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json").json()
    post_id = int(data["id"])
    created = envelope(
        "post.created",
        {"post_id": data["id"], "author_id": str(author.id), "mentioned_user_ids": [], "created_at": data["created_at"]},
    )
    assert dispatch(created) is True
    assert sorted(TimelineEntry.objects.filter(post_id=post_id).values_list("user_id", flat=True)) == sorted([author.id, fan.id])
    assert dispatch(created) is False
    assert TimelineEntry.objects.filter(post_id=post_id).count() == 2
    assert [int(p["id"]) for p in fan.api.get("/api/v1/feed").json()["results"]] == [post_id]

    assert author.api.delete(f"/api/v1/posts/{post_id}").status_code == 204
    deleted = envelope("post.deleted", {"post_id": data["id"], "author_id": str(author.id)})
    assert dispatch(deleted) is True
    assert dispatch(deleted) is False
    assert not TimelineEntry.objects.filter(post_id=post_id).exists()
    assert store.client().zscore(store.key(fan.id), data["id"]) is None


@pytest.fixture
def published():
    """Names of the Celery tasks sent while the test runs (Celery's own before_task_publish signal)."""
    from celery.signals import before_task_publish

    names: list[str] = []

    def record(sender=None, **_):
        names.append(sender)

    before_task_publish.connect(record, weak=False)
    yield names
    before_task_publish.disconnect(record)


def _created(author, data) -> dict:
    return envelope(
        "post.created",
        {"post_id": data["id"], "author_id": str(author.id), "mentioned_user_ids": [], "created_at": data["created_at"]},
    )


def test_a_small_fanout_is_written_by_the_handler_itself_no_task_per_page(person, published):
    """Followers in one page of at most FANOUT_INLINE: every timeline is written when the handler's
    transaction commits (no eager tasks here: a queued page would not have run)."""
    author, fans = person("author"), [person("fan") for _ in range(3)]
    for fan in fans:
        fan.follow(author)
    fans[0].api.get("/api/v1/feed")  # a built Redis timeline: the fan-out writes it too
    data = author.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json").json()
    assert dispatch(_created(author, data)) is True
    assert sorted(TimelineEntry.objects.filter(post_id=int(data["id"])).values_list("user_id", flat=True)) == sorted(
        [author.id, *(f.id for f in fans)]
    )
    assert store.client().zscore(store.key(fans[0].id), data["id"]) is not None
    assert "feed.fanout_deliver" not in published


@pytest.fixture
def tasks_run():
    """Names of the Celery tasks run while the test runs, eager ones included (task_prerun)."""
    from celery.signals import task_prerun

    names: list[str] = []

    def record(sender=None, **_):
        names.append(sender.name)

    task_prerun.connect(record, weak=False)
    yield names
    task_prerun.disconnect(record)


def test_followers_above_the_inline_limit_are_delivered_by_a_task_per_page(person, tasks_run, settings, eager_tasks):
    settings.FANOUT_INLINE, settings.FANOUT_PAGE = 1, 2  # three followers: two pages, each its own task
    author, fans = person("author"), [person("fan") for _ in range(3)]
    for fan in fans:
        fan.follow(author)
    data = author.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json").json()
    assert dispatch(_created(author, data)) is True
    assert tasks_run.count("feed.fanout_deliver") == 2
    assert sorted(TimelineEntry.objects.filter(post_id=int(data["id"])).values_list("user_id", flat=True)) == sorted(
        [author.id, *(f.id for f in fans)]
    )


@pytest.fixture
def follower_calls(monkeypatch):
    """The authors whose follower ids feed asked users for (the real call, counted)."""
    from authors.client import users_client

    client, asked = users_client(), []
    real = client.follower_ids

    def counted(user_id, **kw):
        asked.append(user_id)
        return real(user_id, **kw)

    monkeypatch.setattr(client, "follower_ids", counted)
    return asked


def _post(author) -> dict:
    data = author.api.post("/api/v1/posts", data=json.dumps({"body": "x"}), content_type="application/json").json()
    assert dispatch(_created(author, data)) is True
    return data


def _readers(data) -> list[int]:
    return sorted(TimelineEntry.objects.filter(post_id=int(data["id"])).values_list("user_id", flat=True))


def test_a_small_authors_followers_are_asked_of_users_once_then_kept(person, follower_calls):
    author, fans = person("author"), [person("fan") for _ in range(2)]
    for fan in fans:
        fan.follow(author)
    first, second = _post(author), _post(author)
    assert follower_calls == [author.id]  # the second post's fan-out used the kept ids
    assert _readers(first) == _readers(second) == sorted([author.id, *(f.id for f in fans)])


def test_a_follow_or_unfollow_event_makes_the_next_fanout_ask_users_again(person, follower_calls):
    author, old_fan, new_fan = person("author"), person("fan"), person("fan")
    old_fan.follow(author)
    _post(author)
    new_fan.follow(author)
    dispatch(envelope("user.followed", {"follower_id": str(new_fan.id), "followee_id": str(author.id)}))
    assert _readers(_post(author)) == sorted([author.id, old_fan.id, new_fan.id])
    old_fan.unfollow(author)
    dispatch(envelope("user.unfollowed", {"follower_id": str(old_fan.id), "followee_id": str(author.id)}))
    assert _readers(_post(author)) == sorted([author.id, new_fan.id])
    assert follower_calls == [author.id] * 3


def test_a_deleted_account_makes_every_kept_follower_list_stale(person, follower_calls):
    from timelines import followers

    author, fan = person("author"), person("fan")
    fan.follow(author)
    _post(author)
    assert followers.lookup(author.id)[0] == [fan.id]
    dispatch(envelope("user.deleted", {"user_id": str(person("gone").id)}))
    assert followers.lookup(author.id)[0] is None
    _post(author)
    assert follower_calls == [author.id, author.id]


def test_ids_read_before_a_change_are_stale_when_they_arrive():
    """A fill carries the generation read before users was asked: a follow handled during the call
    makes what it writes unusable."""
    from timelines import followers

    ids, token = followers.lookup(987654)
    assert ids is None and token is not None
    followers.followers_changed(987654)  # a user.followed handled while users answered
    followers.fill(987654, token, [1, 2])
    assert followers.lookup(987654)[0] is None
    ids, token = followers.lookup(987654)
    followers.fill(987654, token, [1, 2, 3])
    assert followers.lookup(987654)[0] == [1, 2, 3]
