"""Notification spam (issue 13): repeats collapse, likes of one post are grouped."""

import pytest
from devices.models import Delivery, Device
from django.utils import timezone
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_follow_unfollow_flips_notify_once(deliver):
    for _ in range(10):
        deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
        # (notifications does not consume user.unfollowed: the unfollow in between changes nothing here)
    assert list(Notification.objects.values_list("kind", "actor_id", "recipient_id")) == [("follow", 11, 22)]
    assert Delivery.objects.count() == 1
    deliver("user.followed", {"follower_id": "12", "followee_id": "22"})  # another follower is news
    assert Notification.objects.count() == 2


def test_like_unlike_flips_notify_once(deliver):
    for _ in range(10):
        deliver("post.liked", {"post_id": "7", "author_id": "22", "liker_id": "11"}, producer="feed")
    assert Notification.objects.count() == 1 and Delivery.objects.count() == 1


def test_likes_of_one_post_are_grouped_while_unread(register, client_for, deliver):
    author = register("author")
    Device.objects.create(user_id=author.id, platform="ios", token="tok-author", created_at=timezone.now())
    likers = [register(f"liker{i}") for i in range(4)]
    for liker in likers:
        deliver("post.liked", {"post_id": "7", "author_id": str(author.id), "liker_id": str(liker.id)}, producer="feed")
    deliver(
        "post.liked", {"post_id": "7", "author_id": str(author.id), "liker_id": str(likers[1].id)}, producer="feed"
    )  # a repeat changes nothing
    client = client_for(author)
    page = client.get("/api/v1/notifications").json()
    assert len(page["results"]) == 1
    item = page["results"][0]
    assert (item["kind"], item["actor"]["id"], item["actor_count"], item["post_id"], item["read"]) == (
        "like",
        str(likers[-1].id),
        4,
        "7",
        False,
    )
    assert client.get("/api/v1/notifications/unread-count").json()["count"] == 1
    assert Delivery.objects.filter(status="pending").count() == 1  # the replaced ones' pushes went with them
    # once read, the next liker starts a new group; the read one stays as it was
    assert client.post("/api/v1/notifications/read", {"all": True}, format="json").status_code == 204
    newcomer = register("late")
    deliver("post.liked", {"post_id": "7", "author_id": str(author.id), "liker_id": str(newcomer.id)}, producer="feed")
    items = client.get("/api/v1/notifications").json()["results"]
    assert [(i["actor"]["id"], i["actor_count"], i["read"]) for i in items] == [
        (str(newcomer.id), 1, False),
        (str(likers[-1].id), 4, True),
    ]
    # likes of another post are another notification; other kinds keep actor_count 1
    deliver("post.liked", {"post_id": "8", "author_id": str(author.id), "liker_id": str(likers[0].id)}, producer="feed")
    deliver("user.followed", {"follower_id": str(likers[0].id), "followee_id": str(author.id)})
    assert client.get("/api/v1/notifications/unread-count").json()["count"] == 3
