import threading

import pytest
from accounts.models import User
from django.db import connection
from follows.models import Follow
from rest_framework.test import APIClient

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


def test_follow_then_again_is_idempotent(alice, bob, client_for):
    client = client_for(alice)
    assert client.post("/api/v1/users/bob/follow").status_code == 201
    assert client.post("/api/v1/users/BOB/follow").status_code == 200
    assert Follow.objects.filter(follower=alice, followee=bob).count() == 1
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert (alice.following_count, alice.followers_count, bob.followers_count, bob.following_count) == (1, 0, 1, 0)


def test_profile_shows_counts_and_is_following(alice, bob, client_for):
    client_for(alice).post("/api/v1/users/bob/follow")
    body = client_for(alice).get("/api/v1/users/bob").json()
    assert body == {
        "id": str(bob.id),
        "username": "bob",
        "display_name": "bob",
        "avatar_url": "",
        "bio": "",
        "followers_count": 1,
        "following_count": 0,
        "is_following": True,
        "created_at": body["created_at"],
    }
    assert client_for(bob).get("/api/v1/users/alice").json()["is_following"] is False


def test_unfollow(alice, bob, client_for):
    client = client_for(alice)
    client.post("/api/v1/users/bob/follow")
    assert client.delete("/api/v1/users/bob/follow").status_code == 204
    assert client.delete("/api/v1/users/bob/follow").status_code == 204
    bob.refresh_from_db()
    assert bob.followers_count == 0 and Follow.objects.count() == 0
    assert client.get("/api/v1/users/bob").json()["followers_count"] == 0  # cache was invalidated


def test_self_follow_rejected(alice, client_for):
    assert_problem(client_for(alice).post("/api/v1/users/alice/follow"), 422, "cannot-follow-self")
    assert Follow.objects.count() == 0


def test_follow_unknown_user(alice, client_for):
    assert_problem(client_for(alice).post("/api/v1/users/ghost/follow"), 404, "not-found")
    assert_problem(client_for(alice).get("/api/v1/users/ghost"), 404, "not-found")
    assert Follow.objects.count() == 0


def test_follow_requires_auth(bob):
    assert_problem(APIClient().post("/api/v1/users/bob/follow"), 401, "not-authenticated")


def test_followers_and_following_pages(make_user, client_for):
    star, _ = make_user("star")
    fans = [make_user(f"fan{i}")[0] for i in range(5)]
    for fan in fans:
        client_for(fan).post("/api/v1/users/star/follow")
    client = client_for(star)
    first = client.get("/api/v1/users/star/followers?limit=2").json()
    assert [p["username"] for p in first["results"]] == ["fan4", "fan3"]
    assert set(first["results"][0]) == {"id", "username", "display_name", "avatar_url"}
    second = client.get(f"/api/v1/users/star/followers?limit=2&cursor={first['next_cursor']}").json()
    assert [p["username"] for p in second["results"]] == ["fan2", "fan1"]
    third = client.get(f"/api/v1/users/star/followers?limit=2&cursor={second['next_cursor']}").json()
    assert [p["username"] for p in third["results"]] == ["fan0"] and third["next_cursor"] is None
    following = client_for(fans[0]).get("/api/v1/users/fan0/following").json()
    assert [p["username"] for p in following["results"]] == ["star"] and following["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=eyJ0YW1wZXJlZCI6MX0:1abc:deadbeef", "cursor"),
    ],
)
def test_list_bad_paging(alice, client_for, query, field):
    body = assert_problem(client_for(alice).get(f"/api/v1/users/alice/followers?{query}"), 400, "validation-error")
    assert list(body["errors"]) == [field]


def test_cursor_from_another_list_is_rejected(make_user, client_for):
    star, _ = make_user("star")
    for i in range(3):
        client_for(make_user(f"f{i}")[0]).post("/api/v1/users/star/follow")
    cursor = client_for(star).get("/api/v1/users/star/followers?limit=1").json()["next_cursor"]
    response = client_for(star).get(f"/api/v1/users/star/following?cursor={cursor}")
    assert_problem(response, 400, "validation-error")


def test_patch_me(alice, client_for):
    client = client_for(alice)
    response = client.patch(
        "/api/v1/users/me", {"display_name": "Alice A", "bio": "hi", "avatar_url": "https://cdn.example.com/a.png"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["display_name"], response.json()["bio"]) == ("Alice A", "hi")
    assert client.get("/api/v1/users/alice").json()["display_name"] == "Alice A"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "mallory"}, "username"),
        ({"display_name": "x" * 51}, "display_name"),
        ({"bio": "x" * 301}, "bio"),
        ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
        ({"display_name": 5}, "display_name"),
    ],
)
def test_patch_me_rejects(alice, client_for, body, field):
    response = client_for(alice).patch("/api/v1/users/me", body, format="json")
    assert list(assert_problem(response, 400, "validation-error")["errors"]) == [field]
    alice.refresh_from_db()
    assert (alice.username, alice.display_name, alice.bio, alice.avatar_url) == ("alice", "alice", "", "")


@pytest.mark.django_db(transaction=True)
def test_concurrent_follows_keep_counts_exact(make_user):
    """Many threads follow and unfollow one user at once: no lost update on the counters."""
    from follows import services

    star, _ = make_user("star")
    fans = [make_user(f"c{i}")[0] for i in range(12)]
    barrier = threading.Barrier(len(fans))
    errors = []

    def churn(fan):
        try:
            barrier.wait()
            for _ in range(3):
                services.follow_create(follower_id=fan.id, followee_username="star")
                services.follow_delete(follower_id=fan.id, followee_username="star")
            services.follow_create(follower_id=fan.id, followee_username="star")
            services.follow_create(follower_id=fan.id, followee_username="star")
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=churn, args=(fan,)) for fan in fans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    star.refresh_from_db()
    assert star.followers_count == len(fans) == Follow.objects.filter(followee=star).count()
    assert sorted(User.objects.filter(id__in=[f.id for f in fans]).values_list("following_count", flat=True)) == [1] * 12
