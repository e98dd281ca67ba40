"""The feed degrades, never fails: with the users service really stopped, it answers 200 with
cached profiles, and placeholders for authors it has never seen."""

import pytest
from authors.client import users_client
from posts.models import Post
from timelines import services

from shared import ids
from shared.http import CircuitBreaker
from tests.conftest import UsersProcess, point_feed_at

pytestmark = pytest.mark.django_db


def make_post(author_id: int) -> int:
    post_id = ids.next_id(namespace="posts")
    Post.objects.create(id=post_id, author_id=author_id, body="hi", created_at="2025-01-01T00:00:00Z")
    return post_id


def test_feed_answers_with_cached_profiles_and_placeholders_when_users_is_stopped(person):
    known, unseen, reader = person("known"), person("unseen"), person("reader")
    second_users = UsersProcess()
    try:
        point_feed_at(second_users.url)
        known_post = make_post(known.id)
        services.entries_deliver(post_ids_by_author={known.id: [known_post]}, user_ids=[reader.id])
        warm = reader.api.get("/api/v1/feed").json()  # verifies the token (JWKS) and caches known's profile
        assert warm["results"][0]["author"] == known.summary()
    finally:
        second_users.stop()
    unseen_post = make_post(unseen.id)
    services.entries_deliver(post_ids_by_author={unseen.id: [unseen_post]}, user_ids=[reader.id])

    response = reader.api.get("/api/v1/feed")
    assert response.status_code == 200
    body = response.json()
    assert [p["author"] for p in body["results"]] == [
        {"id": str(unseen.id), "username": "", "display_name": "", "avatar_url": "", "placeholder": True},
        known.summary(),
    ]
    assert body["degraded"] is True


def test_feed_answers_while_the_circuit_is_open(person):
    author, reader = person("author"), person("reader")
    second_users = UsersProcess()
    point_feed_at(second_users.url)
    reader.api.get("/api/v1/feed")  # token keys fetched while users is up
    second_users.stop()
    users_client().breaker = CircuitBreaker(failure_threshold=1, reset_timeout=3600, name="users")
    services.entries_deliver(post_ids_by_author={author.id: [make_post(author.id)]}, user_ids=[reader.id])
    first = reader.api.get("/api/v1/feed")
    assert users_client().breaker.state == CircuitBreaker.OPEN
    second = reader.api.get("/api/v1/feed")
    assert first.status_code == second.status_code == 200
    assert second.json()["results"][0]["author"]["placeholder"] is True
    assert second.json()["degraded"] is True


def test_posting_a_mention_while_users_is_stopped_is_503_and_writes_nothing(person):
    import json

    from shared.testing import assert_problem

    author = person("author")
    second_users = UsersProcess()
    point_feed_at(second_users.url)
    author.api.get("/api/v1/feed")
    second_users.stop()
    response = author.api.post("/api/v1/posts", data=json.dumps({"body": "hi @someone"}), content_type="application/json")
    assert_problem(response, 503, "dependency-unavailable")
    assert Post.objects.count() == 0
    plain = author.api.post("/api/v1/posts", data=json.dumps({"body": "no mentions"}), content_type="application/json")
    assert plain.status_code == 201  # posts without mentions never need users
