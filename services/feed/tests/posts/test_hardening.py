"""Hostile input from a security probe (issue 13): it gets a 400 problem and writes nothing."""

import pytest
from posts.models import Like, Post

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", ["[" * 1000, '{"body":' * 1000, "[" * 60_000])
def test_deeply_nested_json_is_a_400_problem(person, body):
    alice = person("alice")
    response = alice.api.post("/api/v1/posts", data=body, content_type="application/json")
    assert_problem(response, 400, "malformed-request")
    assert Post.objects.count() == 0 and Like.objects.count() == 0


def test_every_response_is_nosniff(person, api_client):
    alice = person("alice")
    for response in (
        alice.api.get("/api/v1/feed"),
        alice.api.post("/api/v1/posts", {"body": "hi"}, format="json"),
        api_client.get("/api/v1/feed"),
        api_client.get("/no/such/url"),
    ):
        assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "body", ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u3164 ", "\u2800\u2800", "\u0301", "\u202e\u202c"]
)
def test_a_post_of_only_invisible_characters_is_refused(person, body):
    alice = person("alice")
    response = alice.api.post("/api/v1/posts", {"body": body}, format="json")
    problem = assert_problem(response, 400, "validation-error")
    assert list(problem["errors"]) == ["body"]
    assert Post.objects.count() == 0


def test_a_post_with_visible_text_among_zero_width_characters_is_kept(person):
    alice = person("alice")
    assert alice.api.post("/api/v1/posts", {"body": "hi\u200b"}, format="json").status_code == 201


def test_a_deleted_accounts_token_writes_nothing(person):
    """users writes the revocation on DELETE /users/me; feed refuses the token at once."""
    import httpx
    from django.conf import settings

    alice, bob = person("alice"), person("bob")
    post = bob.api.post("/api/v1/posts", {"body": "hello"}, format="json").json()
    deleted = httpx.request(
        "DELETE",
        f"{alice.users_url}/api/v1/users/me",
        headers={"Authorization": f"Bearer {alice.access}", "Idempotency-Key": "del-1"},
        json={"password": "correct horse battery staple"},
        timeout=10,
    )
    assert deleted.status_code == 204, deleted.text
    for response in (
        alice.api.post("/api/v1/posts", {"body": "still here"}, format="json"),
        alice.api.post(f"/api/v1/posts/{post['id']}/like"),
        alice.api.get("/api/v1/feed"),
    ):
        assert_problem(response, 401, "invalid-token")
    assert list(Post.objects.values_list("author_id", flat=True)) == [bob.id] and Like.objects.count() == 0
    assert bob.api.get("/api/v1/feed").status_code == 200
    assert settings.REVOCATION_REDIS_URL == settings.REDIS_URL


def test_user_deleted_event_writes_the_revocation_too(person):
    """If users could not write it (Redis blip), feed's consumer of user.deleted does."""
    import uuid

    from shared.events.inbox import dispatch

    alice = person("alice")
    assert alice.api.get("/api/v1/feed").status_code == 200
    dispatch(
        {
            "id": str(uuid.uuid4()),
            "type": "user.deleted",
            "version": 1,
            "occurred_at": "2025-01-01T00:00:00Z",
            "producer": "users",
            "data": {"user_id": str(alice.id)},
            "request_id": "",
        }
    )
    assert_problem(alice.api.get("/api/v1/feed"), 401, "invalid-token")


def test_mentions_are_rate_limited_per_author(person, settings):
    settings.MENTIONS_PER_HOUR = 3
    alice, bob, carol, dave = person("alice"), person("bob"), person("carol"), person("dave")
    first = alice.api.post("/api/v1/posts", {"body": f"hi @{bob.username} @{carol.username}"}, format="json")
    assert first.status_code == 201 and len(first.json()["mentions"]) == 2
    over = alice.api.post("/api/v1/posts", {"body": f"and @{dave.username} @{bob.username}"}, format="json")
    problem = assert_problem(over, 429, "mention-rate-limited")
    assert "nothing was posted" in problem["detail"] and 1 <= int(over["Retry-After"]) <= 3601
    assert Post.objects.count() == 1
    # what is left of the budget, and posts without mentions, still go through; others are not affected
    assert alice.api.post("/api/v1/posts", {"body": f"@{dave.username}"}, format="json").status_code == 201
    assert alice.api.post("/api/v1/posts", {"body": "no mentions"}, format="json").status_code == 201
    assert_problem(alice.api.post("/api/v1/posts", {"body": f"@{bob.username}"}, format="json"), 429, "mention-rate-limited")
    assert bob.api.post("/api/v1/posts", {"body": f"@{alice.username}"}, format="json").status_code == 201


def test_only_the_first_mentions_of_a_post_notify(person, settings):
    settings.MENTIONS_PER_POST = 2
    alice, others = person("alice"), [person(f"m{i}") for i in range(3)]
    body = " ".join(f"@{o.username}" for o in others)
    response = alice.api.post("/api/v1/posts", {"body": body}, format="json")
    assert response.status_code == 201
    assert response.json()["mentions"] == [others[0].username, others[1].username]
    assert Post.objects.get().mentioned_user_ids == [others[0].id, others[1].id]
