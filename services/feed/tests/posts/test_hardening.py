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
    for response in (alice.api.get("/api/v1/feed"), alice.api.post("/api/v1/posts", {"body": "hi"}, format="json"),
                     api_client.get("/api/v1/feed"), api_client.get("/no/such/url")):
        assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("body", ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u3164 ", "\u2800\u2800", "\u0301",
                                  "\u202e\u202c"])
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
    deleted = httpx.request("DELETE", f"{alice.users_url}/api/v1/users/me", headers={
        "Authorization": f"Bearer {alice.access}", "Idempotency-Key": "del-1"},
        json={"password": "correct horse battery staple"}, timeout=10)
    assert deleted.status_code == 204, deleted.text
    for response in (alice.api.post("/api/v1/posts", {"body": "still here"}, format="json"),
                     alice.api.post(f"/api/v1/posts/{post['id']}/like"),
                     alice.api.get("/api/v1/feed")):
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
    dispatch({"id": str(uuid.uuid4()), "type": "user.deleted", "version": 1, "occurred_at": "2025-01-01T00:00:00Z",
              "producer": "users", "data": {"user_id": str(alice.id)}, "request_id": ""})
    assert_problem(alice.api.get("/api/v1/feed"), 401, "invalid-token")
