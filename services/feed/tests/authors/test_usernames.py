"""The username cache (authors/usernames.py) of the user timeline and of mentions: real Redis, a real
users service (stopped where the test says so), and the events users really wrote, read from its
outbox and applied through feed's inbox."""

import json
import os
import time

import httpx
import psycopg2
import pytest
from authors import usernames
from authors.client import UserSummary
from posts.models import Post
from prometheus_client import REGISTRY

from shared import redis_clients
from shared.events.inbox import dispatch
from shared.testing import assert_problem
from tests.conftest import UsersProcess, point_feed_at

pytestmark = pytest.mark.django_db


def create(person, body):
    return person.api.post("/api/v1/posts", data=json.dumps({"body": body}), content_type="application/json")


def timeline(reader, name: str):
    return reader.api.get("/api/v1/posts", {"author": name})


def users_calls() -> float:
    """Calls feed's users client made so far, whatever their outcome (its Prometheus counter)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "downstream_requests"
        for sample in metric.samples
        if sample.name == "downstream_requests_total" and sample.labels.get("target") == "users"
    )


def users_event(type_: str, user_id: int) -> dict:
    """The newest event of this type about this user in users' outbox, as its relay would publish it."""
    with psycopg2.connect(os.environ["USERS_DATABASE_URL"]) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, type, version, occurred_at, data FROM events_outbox "
            "WHERE type = %s AND data->>'user_id' = %s ORDER BY seq DESC LIMIT 1",
            [type_, str(user_id)],
        )
        row = cursor.fetchone()
    conn.close()
    assert row is not None, f"users wrote no {type_} for {user_id}"
    event_id, type_, version, occurred_at, data = row
    return {
        "id": str(event_id),
        "type": type_,
        "version": version,
        "occurred_at": occurred_at.isoformat(),
        "producer": "users",
        "data": data,
        "request_id": "",
    }


def delete_account(person) -> None:
    response = httpx.request(
        "DELETE",
        f"{person.users_url}/api/v1/users/me",
        headers={"Authorization": f"Bearer {person.access}"},
        json={"password": "correct horse battery staple"},
    )
    assert response.status_code == 204, response.text


@pytest.fixture
def users_then_stopped(users_service):
    """A second users process feed is pointed at: the test warms what it needs, then stops it."""
    second = UsersProcess()
    point_feed_at(second.url)
    yield second
    if second.proc.poll() is None:
        second.stop()
    point_feed_at(users_service.url)


def test_a_timeline_read_asks_users_once_then_redis(person):
    alice, bob = person("alice"), person("bob")
    first = create(alice, "one").json()["id"]
    before = users_calls()
    assert [p["id"] for p in timeline(bob, alice.username).json()["results"]] == [first]
    after_first = users_calls()
    assert after_first == before + 1  # the name; the author's profile comes with it
    for name in (alice.username, alice.username.upper()):  # names are case-insensitive: one entry
        response = timeline(bob, name)
        assert response.status_code == 200 and [p["id"] for p in response.json()["results"]] == [first]
    assert users_calls() == after_first


def test_a_cached_name_serves_the_timeline_while_users_is_stopped(person, users_then_stopped):
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    post_id = create(alice, "kept").json()["id"]
    warm = timeline(bob, alice.username)  # verifies bob's token (JWKS) and caches alice's name
    assert warm.status_code == 200
    users_then_stopped.stop()

    response = timeline(bob, alice.username)
    assert response.status_code == 200
    assert response.json()["results"] == warm.json()["results"]
    assert response.json()["results"][0]["id"] == post_id
    assert response.json()["results"][0]["author"] == alice.summary()
    assert_problem(timeline(bob, carol.username), 503, "dependency-unavailable")  # never looked up


def test_mentions_of_cached_names_post_while_users_is_stopped(person, users_then_stopped):
    alice, bob, carol, dave = person("alice"), person("bob"), person("carol"), person("dave")
    first = create(alice, f"hi @{bob.username} @{carol.username} @nobody_{alice.id}")  # one users call for all three
    assert first.status_code == 201 and first.json()["mentions"] == [bob.username, carol.username]
    users_then_stopped.stop()

    second = create(alice, f"again @{carol.username.upper()} @{bob.username} @nobody_{alice.id}")
    assert second.status_code == 201, second.content
    assert second.json()["mentions"] == [carol.username, bob.username]
    assert Post.objects.get(id=int(second.json()["id"])).mentioned_user_ids == [carol.id, bob.id]
    assert_problem(create(alice, f"and @{dave.username}"), 503, "dependency-unavailable")
    assert Post.objects.count() == 2


def test_a_batch_asks_users_only_for_the_names_redis_does_not_know(person):
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    usernames.summaries_by_username([bob.username])
    before = users_calls()
    found = usernames.summaries_by_username([bob.username, carol.username, f"nobody_{alice.id}", "not a name!"])
    assert users_calls() == before + 1
    assert sorted(found) == sorted([bob.username.lower(), carol.username.lower()])
    again = usernames.summaries_by_username([carol.username, f"Nobody_{alice.id}", bob.username])
    assert users_calls() == before + 1  # all three known now, the missing one too
    assert again == {k: v for k, v in found.items()}


def test_a_deleted_user_is_404_once_users_user_deleted_is_applied(person):
    alice, bob = person("alice"), person("bob")
    create(alice, "soon gone")
    assert timeline(bob, alice.username).status_code == 200  # cached
    delete_account(alice)
    dispatch(users_event("user.deleted", alice.id))

    assert_problem(timeline(bob, alice.username), 404, "not-found")
    assert_problem(timeline(bob, alice.username), 404, "not-found")  # the negative entry now
    assert Post.objects.count() == 0


def test_a_fill_that_read_users_before_the_delete_does_not_bring_the_user_back(person, users_then_stopped):
    alice, bob = person("alice"), person("bob")
    timeline(bob, alice.username)  # bob's token verified while users is up
    stale = UserSummary(id=alice.id, username=alice.username, display_name="Alice", avatar_url="")
    delete_account(alice)
    dispatch(users_event("user.deleted", alice.id))
    usernames._fill(redis_clients.client(), [alice.username.lower()], {alice.username.lower(): stale})
    users_then_stopped.stop()  # a lookup that reaches users fails: only the cache can answer now

    assert_problem(timeline(bob, alice.username), 503, "dependency-unavailable")  # not served from the cache


def test_a_name_registered_again_after_a_delete_resolves_to_the_new_user(person, users_service, settings):
    settings.USERNAME_MISS_SECONDS = 1
    old, bob = person("alice"), person("bob")
    create(old, "the old account's")
    timeline(bob, old.username)
    delete_account(old)
    dispatch(users_event("user.deleted", old.id))
    assert_problem(timeline(bob, old.username), 404, "not-found")
    response = httpx.post(
        f"{users_service.url}/api/v1/auth/register",
        json={"username": old.username, "email": f"again_{old.username}@example.com", "password": "correct horse battery"},
    )
    assert response.status_code == 201, response.text
    new_id = response.json()["user"]["id"]

    deadline = time.monotonic() + 30  # the negative entry expires (1 s here)
    while (read := timeline(bob, old.username)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert read.status_code == 200, read.content
    assert read.json()["results"] == []  # the new account's posts: none
    assert usernames.summaries_by_username([old.username])[old.username.lower()].id == int(new_id)


def test_a_missing_name_is_remembered_until_its_entry_expires(person, users_then_stopped, settings):
    settings.USERNAME_MISS_SECONDS = 6  # outlasts stopping users (a few seconds)
    bob = person("bob")
    missing = f"nobody_{bob.id}"
    assert_problem(timeline(bob, missing), 404, "not-found")  # users asked once
    users_then_stopped.stop()

    before = users_calls()
    assert_problem(timeline(bob, missing), 404, "not-found")  # not 503: the negative entry answers
    assert users_calls() == before
    deadline = time.monotonic() + 30
    while redis_clients.client().exists(usernames.name_key(missing)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_problem(timeline(bob, missing), 503, "dependency-unavailable")  # expired: users is asked again


def test_user_updated_replaces_the_profile_and_a_rename_retires_the_old_name(person, users_then_stopped):
    alice, bob = person("alice"), person("bob")
    post_id = create(alice, "mine").json()["id"]
    timeline(bob, alice.username)
    renamed = f"{alice.username[:20]}_new"
    event = {
        "id": "6f2d8a0e-4a77-4b86-9a35-0a6c3c1d2e10",
        "type": "user.updated",
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "producer": "users",
        "data": {
            "user_id": str(alice.id),
            "username": renamed,
            "display_name": "Alice B",
            "avatar_url": "https://a.example/x.png",
        },
        "request_id": "",
    }
    dispatch(event)
    # fills whose users calls answered before the event: neither the old profile nor the old name come back
    stale = UserSummary(id=alice.id, username=renamed, display_name="Alice", avatar_url="")
    usernames._fill(redis_clients.client(), [renamed.lower()], {renamed.lower(): stale})
    old_name = UserSummary(id=alice.id, username=alice.username, display_name="Alice", avatar_url="")
    usernames._fill(redis_clients.client(), [alice.username.lower()], {alice.username.lower(): old_name})
    users_then_stopped.stop()

    response = timeline(bob, renamed)
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["results"]] == [post_id]
    assert response.json()["results"][0]["author"] == {
        "id": str(alice.id),
        "username": renamed,
        "display_name": "Alice B",
        "avatar_url": "https://a.example/x.png",
        "placeholder": False,
    }
    assert_problem(timeline(bob, alice.username), 503, "dependency-unavailable")  # the old name: not from the cache


def test_a_display_name_change_from_users_reaches_the_user_timeline(person, users_service):
    alice, bob = person("alice"), person("bob")
    create(alice, "x")
    assert timeline(bob, alice.username).json()["results"][0]["author"]["display_name"] == "Alice"
    response = httpx.patch(
        f"{users_service.url}/api/v1/users/me",
        headers={"Authorization": f"Bearer {alice.access}"},
        json={"display_name": "Alice Renamed"},
    )
    assert response.status_code == 200, response.text
    dispatch(users_event("user.updated", alice.id))
    assert timeline(bob, alice.username).json()["results"][0]["author"]["display_name"] == "Alice Renamed"


def test_without_redis_names_are_asked_of_users(person, settings):
    alice, bob = person("alice"), person("bob")
    post_id = create(alice, "x").json()["id"]
    timeline(bob, alice.username)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    before = users_calls()
    response = timeline(bob, alice.username)
    assert response.status_code == 200 and [p["id"] for p in response.json()["results"]] == [post_id]
    assert users_calls() > before
