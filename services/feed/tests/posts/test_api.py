import json

import pytest
from posts.models import Like, Post
from timelines import services as timeline_services

from shared.testing import QueryCounter, assert_problem

pytestmark = pytest.mark.django_db


def create(person, body, **headers):
    return person.api.post("/api/v1/posts", data=json.dumps({"body": body}), content_type="application/json", **headers)


def test_create_returns_the_post_with_its_author_and_resolved_mentions(person):
    alice, bob = person("alice"), person("bob")
    response = create(alice, f"  hello @{bob.username} and @nobody_{alice.id} mail@{bob.username} \n")
    assert response.status_code == 201, response.content
    body = response.json()
    post = Post.objects.get()
    assert body == {
        "id": str(post.id),
        "author": alice.summary(),
        "body": f"hello @{bob.username} and @nobody_{alice.id} mail@{bob.username}",
        "mentions": [bob.username],
        "like_count": 0,
        "liked_by_me": False,
        "created_at": post.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert post.mentioned_user_ids == [bob.id]
    assert post.author_id == alice.id


def test_ids_are_time_ordered_64_bit(person):
    alice = person("alice")
    ids = [int(create(alice, f"post {i}").json()["id"]) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(2**40 < i < 2**63 for i in ids)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"body": ""}, "body"),
        ({"body": "   \n\t "}, "body"),
        ({"body": "x" * 501}, "body"),
        ({"body": 123}, "body"),
        ({"body": None}, "body"),
        ({"body": ["a"]}, "body"),
        ({}, "body"),
    ],
)
def test_bad_bodies_are_problems_and_nothing_is_written(person, payload, field):
    alice = person("alice")
    response = alice.api.post("/api/v1/posts", data=json.dumps(payload), content_type="application/json")
    body = assert_problem(response, 400, "validation-error")
    assert list(body["errors"]) == [field]
    assert Post.objects.count() == 0


def test_500_characters_after_trimming_is_accepted(person):
    response = create(person("alice"), "  " + "x" * 500 + "  ")
    assert response.status_code == 201
    assert len(response.json()["body"]) == 500


def test_malformed_json_is_a_problem(person):
    response = person("alice").api.post("/api/v1/posts", data="{nope", content_type="application/json")
    assert_problem(response, 400, "malformed-request")
    assert Post.objects.count() == 0


def test_unauthenticated_is_401(api_client):
    assert_problem(api_client.post("/api/v1/posts", {"body": "x"}, format="json"), 401, "not-authenticated")


def test_idempotency_key_replays_the_first_response(person):
    alice = person("alice")
    first = create(alice, "once", HTTP_IDEMPOTENCY_KEY="k-1")
    again = create(alice, "once", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Post.objects.count() == 1


def test_idempotency_keys_are_per_user(person):
    alice, bob = person("alice"), person("bob")
    create(alice, "same", HTTP_IDEMPOTENCY_KEY="k")
    response = create(bob, "same", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 201
    assert response.json()["author"]["id"] == str(bob.id)
    assert Post.objects.count() == 2


def test_idempotency_key_with_another_body_is_422(person):
    alice = person("alice")
    create(alice, "one", HTTP_IDEMPOTENCY_KEY="k-2")
    assert_problem(create(alice, "two", HTTP_IDEMPOTENCY_KEY="k-2"), 422, "idempotency-key-reused")
    assert list(Post.objects.values_list("body", flat=True)) == ["one"]


def test_idempotency_key_replayed_while_running_is_409(person, monkeypatch):
    from posts import services

    alice = person("alice")
    seen = {}

    def create_while_replayed(**kwargs):
        seen["replay"] = create(alice, "slow", HTTP_IDEMPOTENCY_KEY="k-3")  # the first is still running
        return original(**kwargs)

    original = services.post_create
    monkeypatch.setattr(services, "post_create", create_while_replayed)
    assert create(alice, "slow", HTTP_IDEMPOTENCY_KEY="k-3").status_code == 201
    assert_problem(seen["replay"], 409, "idempotency-key-in-progress")
    assert Post.objects.count() == 1


def test_a_failed_validation_is_replayed_too_and_writes_nothing(person):
    alice = person("alice")
    first = create(alice, "", HTTP_IDEMPOTENCY_KEY="k-4")
    again = create(alice, "", HTTP_IDEMPOTENCY_KEY="k-4")
    assert_problem(again, 400, "validation-error")
    assert again.json() == first.json()
    assert Post.objects.count() == 0


def test_get_one_post(person):
    alice, bob = person("alice"), person("bob")
    post_id = create(alice, "hi").json()["id"]
    response = bob.api.get(f"/api/v1/posts/{post_id}")
    assert response.status_code == 200
    assert response.json()["author"] == alice.summary()
    assert response.json()["liked_by_me"] is False


@pytest.mark.parametrize("post_id", ["999999999", "abc", "-1", "0", "1" * 25, "１２"])
def test_unknown_or_malformed_post_ids_are_404(person, post_id):
    alice = person("alice")
    assert_problem(alice.api.get(f"/api/v1/posts/{post_id}"), 404, "not-found")
    assert_problem(alice.api.delete(f"/api/v1/posts/{post_id}"), 404, "not-found")
    assert_problem(alice.api.post(f"/api/v1/posts/{post_id}/like"), 404, "not-found")
    assert Like.objects.count() == 0


def test_delete_own_post(person):
    alice = person("alice")
    post_id = create(alice, "bye").json()["id"]
    assert alice.api.delete(f"/api/v1/posts/{post_id}").status_code == 204
    assert Post.objects.count() == 0
    assert_problem(alice.api.get(f"/api/v1/posts/{post_id}"), 404, "not-found")


def test_deleting_someone_elses_post_is_403_and_keeps_it(person):
    alice, bob = person("alice"), person("bob")
    post_id = create(alice, "mine").json()["id"]
    bob.api.post(f"/api/v1/posts/{post_id}/like")
    assert_problem(bob.api.delete(f"/api/v1/posts/{post_id}"), 403, "not-post-author")
    assert Post.objects.filter(id=post_id).count() == 1
    assert Like.objects.count() == 1


def test_like_is_idempotent_and_counted(person):
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    post_id = create(alice, "like me").json()["id"]
    first = bob.api.post(f"/api/v1/posts/{post_id}/like")
    again = bob.api.post(f"/api/v1/posts/{post_id}/like")
    assert (first.status_code, first.json()) == (201, {"liked": True, "like_count": 1})
    assert (again.status_code, again.json()) == (200, {"liked": True, "like_count": 1})
    carol.api.post(f"/api/v1/posts/{post_id}/like")
    assert bob.api.get(f"/api/v1/posts/{post_id}").json()["liked_by_me"] is True
    assert alice.api.get(f"/api/v1/posts/{post_id}").json()["liked_by_me"] is False
    assert alice.api.get(f"/api/v1/posts/{post_id}").json()["like_count"] == 2
    assert bob.api.delete(f"/api/v1/posts/{post_id}/like").status_code == 204
    assert bob.api.delete(f"/api/v1/posts/{post_id}/like").status_code == 204
    assert Post.objects.get(id=post_id).like_count == 1
    assert list(Like.objects.values_list("user_id", flat=True)) == [carol.id]


def test_liking_a_deleted_post_is_404_and_writes_nothing(person):
    alice, bob = person("alice"), person("bob")
    post_id = create(alice, "gone soon").json()["id"]
    alice.api.delete(f"/api/v1/posts/{post_id}")
    assert_problem(bob.api.post(f"/api/v1/posts/{post_id}/like"), 404, "not-found")
    assert_problem(bob.api.delete(f"/api/v1/posts/{post_id}/like"), 404, "not-found")
    assert Like.objects.count() == 0


def test_user_timeline_pages_newest_first(person):
    alice, bob = person("alice"), person("bob")
    ids = [create(alice, f"p{i}").json()["id"] for i in range(5)]
    create(bob, "not alice's")
    first = bob.api.get(f"/api/v1/posts?author={alice.username}&limit=2").json()
    assert [p["id"] for p in first["results"]] == ids[::-1][:2]
    second = bob.api.get(f"/api/v1/posts?author={alice.username}&limit=2&cursor={first['next_cursor']}").json()
    third = bob.api.get(f"/api/v1/posts?author={alice.username}&limit=2&cursor={second['next_cursor']}").json()
    assert [p["id"] for p in second["results"]] == ids[::-1][2:4]
    assert [p["id"] for p in third["results"]] == ids[:1]
    assert third["next_cursor"] is None


def test_user_timeline_says_what_the_viewer_liked(person):
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    ids = [create(alice, f"p{i}").json()["id"] for i in range(3)]
    assert bob.api.post(f"/api/v1/posts/{ids[1]}/like").status_code == 201
    assert carol.api.post(f"/api/v1/posts/{ids[0]}/like").status_code == 201

    def liked(viewer) -> list[bool]:
        return [p["liked_by_me"] for p in viewer.api.get(f"/api/v1/posts?author={alice.username}").json()["results"]]

    assert liked(bob) == [False, True, False]  # newest first
    assert liked(carol) == [False, False, True]
    assert liked(alice) == [False, False, False]
    page = bob.api.get(f"/api/v1/posts?author={alice.username}&limit=1").json()
    after = bob.api.get(f"/api/v1/posts?author={alice.username}&limit=1&cursor={page['next_cursor']}").json()
    assert after["results"][0]["id"] == ids[1] and after["results"][0]["liked_by_me"] is True
    assert after["results"][0]["like_count"] == 1


@pytest.mark.parametrize(
    "query, status, slug",
    [
        ("author=nobody_at_all_here", 404, "not-found"),
        ("", 400, "validation-error"),
        ("author={name}&cursor=garbage", 400, "validation-error"),
        ("author={name}&limit=0", 400, "validation-error"),
        ("author={name}&limit=101", 400, "validation-error"),
        ("author={name}&limit=ten", 400, "validation-error"),
    ],
)
def test_user_timeline_bad_input(person, query, status, slug):
    alice = person("alice")
    assert_problem(alice.api.get("/api/v1/posts?" + query.format(name=alice.username)), status, slug)


def test_cursor_from_another_list_is_rejected(person):
    alice = person("alice")
    for i in range(3):
        create(alice, f"p{i}")
    timeline_services.fanout_deliver  # noqa: B018 (module import keeps the feed app loaded)
    cursor = alice.api.get(f"/api/v1/posts?author={alice.username}&limit=1").json()["next_cursor"]
    assert_problem(alice.api.get(f"/api/v1/feed?cursor={cursor}"), 400, "validation-error")


@pytest.mark.parametrize("limit", [1, 100])
def test_user_timeline_query_budget_does_not_grow_with_page_size(person, limit):
    alice, bob = person("alice"), person("bob")
    from posts.models import Post as P

    from shared import ids

    P.objects.bulk_create(
        [
            P(
                id=ids.next_id(namespace="posts"),
                author_id=alice.id,
                body=f"p{i}",
                like_count=1,
                created_at="2025-01-01T00:00:00Z",
            )
            for i in range(100)  # liked by someone: liked_by_me is asked (not for posts nobody likes)
        ]
    )
    bob.api.get(f"/api/v1/posts?author={alice.username}&limit=1")  # warm the author cache
    with QueryCounter() as queries:
        response = bob.api.get(f"/api/v1/posts?author={alice.username}&limit={limit}")
    assert len(response.json()["results"]) == limit
    assert len(queries) == 1, [q["sql"] for q in queries]  # the page with liked_by_me


def test_post_create_query_budget(person):
    alice = person("alice")
    with QueryCounter() as queries:
        create(alice, "counted")
    # the post and its outbox row (inside a savepoint here: the test runs in a transaction); the answer
    # is rendered from what was written, not read back
    assert len(queries) == 4, [q["sql"] for q in queries]


def test_like_unlike_and_delete_accept_an_idempotency_key(person):
    alice, bob = person("alice"), person("bob")
    post_id = create(alice, "keyed writes").json()["id"]
    like = bob.api.post(f"/api/v1/posts/{post_id}/like", HTTP_IDEMPOTENCY_KEY="like-1")
    replay = bob.api.post(f"/api/v1/posts/{post_id}/like", HTTP_IDEMPOTENCY_KEY="like-1")
    assert (like.status_code, replay.status_code, replay["Idempotent-Replayed"]) == (201, 201, "true")
    assert replay.json() == like.json() == {"liked": True, "like_count": 1}
    unlike = {"HTTP_IDEMPOTENCY_KEY": "unlike-1"}
    assert bob.api.delete(f"/api/v1/posts/{post_id}/like", **unlike).status_code == 204
    assert bob.api.delete(f"/api/v1/posts/{post_id}/like", **unlike)["Idempotent-Replayed"] == "true"
    assert Like.objects.count() == 0 and Post.objects.get().like_count == 0
    gone = {"HTTP_IDEMPOTENCY_KEY": "delete-1"}
    assert alice.api.delete(f"/api/v1/posts/{post_id}", **gone).status_code == 204
    again = alice.api.delete(f"/api/v1/posts/{post_id}", **gone)  # a retry of a delete that went through
    assert (again.status_code, again["Idempotent-Replayed"]) == (204, "true")
    assert_problem(alice.api.delete(f"/api/v1/posts/{post_id}"), 404, "not-found")
    other_id = create(alice, "another post").json()["id"]  # the same key for another post is another request
    assert_problem(bob.api.post(f"/api/v1/posts/{other_id}/like", HTTP_IDEMPOTENCY_KEY="like-1"), 422, "idempotency-key-reused")
    assert Like.objects.count() == 0
