"""users writes its events to the outbox in the same transaction as the change."""

import uuid

import pytest
from accounts.models import RefreshToken, User
from django.db import transaction
from follows import services as follow_services
from follows.models import Follow

from shared.events.catalogue import EventSchemaError
from shared.events.models import OutboxEvent
from shared.testing import assert_problem
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def events(type_: str | None = None) -> list[tuple[str, dict]]:
    rows = OutboxEvent.objects.order_by("seq")
    if type_:
        rows = rows.filter(type=type_)
    return [(row.type, row.data) for row in rows]


def test_register_emits_user_registered(make_user):
    user, _ = make_user("carol")
    assert events() == [("user.registered", {"user_id": str(user.id), "username": "carol"})]
    row = OutboxEvent.objects.get()
    assert row.version == 1 and row.sent_at is None and isinstance(row.event_id, uuid.UUID)


def test_follow_emits_once_and_unfollow_emits(alice, bob, client_for):
    OutboxEvent.objects.all().delete()
    client = client_for(alice)
    assert client.post("/api/v1/users/bob/follow").status_code == 201
    assert client.post("/api/v1/users/bob/follow").status_code == 200  # idempotent repeat: no second event
    assert client.delete("/api/v1/users/bob/follow").status_code == 204
    assert client.delete("/api/v1/users/bob/follow").status_code == 204
    pair = {"follower_id": str(alice.id), "followee_id": str(bob.id)}
    assert events() == [("user.followed", pair), ("user.unfollowed", pair)]


def test_event_carries_the_request_id(alice, bob, client_for):
    client_for(alice).post("/api/v1/users/bob/follow", HTTP_X_REQUEST_ID="req-follow-1")
    assert OutboxEvent.objects.get(type="user.followed").request_id == "req-follow-1"


def test_rolled_back_change_leaves_no_event(alice, bob):
    OutboxEvent.objects.all().delete()
    with pytest.raises(RuntimeError), transaction.atomic():
        follow_services.follow_create(follower_id=alice.id, followee_username="bob")
        raise RuntimeError("abort after the write")
    assert events() == [] and Follow.objects.count() == 0


def test_profile_update_emits_user_updated_only_for_public_fields(alice, client_for):
    OutboxEvent.objects.all().delete()
    client = client_for(alice)
    assert client.patch("/api/v1/users/me", {"bio": "hi"}, format="json").status_code == 200
    assert events() == []
    response = client.patch(
        "/api/v1/users/me", {"display_name": "Alice A", "avatar_url": "https://img.example/a.png"}, format="json"
    )
    assert response.status_code == 200
    assert events() == [
        (
            "user.updated",
            {"user_id": str(alice.id), "username": "alice", "display_name": "Alice A", "avatar_url": "https://img.example/a.png"},
        )
    ]


def test_invalid_profile_update_writes_nothing(alice, client_for):
    OutboxEvent.objects.all().delete()
    response = client_for(alice).patch("/api/v1/users/me", {"display_name": 5}, format="json")
    assert_problem(response, 400, "validation-error")
    assert events() == []


def test_delete_me_removes_account_edges_counts_and_emits(make_user, client_for):
    alice, _ = make_user("alice")
    _bob, _ = make_user("bob")
    carol, _ = make_user("carol")
    follow_services.follow_create(follower_id=alice.id, followee_username="bob")
    follow_services.follow_create(follower_id=carol.id, followee_username="alice")
    OutboxEvent.objects.all().delete()

    response = client_for(alice).delete("/api/v1/users/me", {"password": PASSWORD}, format="json")

    assert response.status_code == 204
    assert not User.objects.filter(id=alice.id).exists()
    assert Follow.objects.count() == 0 and RefreshToken.objects.filter(user_id=alice.id).count() == 0
    assert list(User.objects.values_list("username", "followers_count", "following_count").order_by("id")) == [
        ("bob", 0, 0),
        ("carol", 0, 0),
    ]
    assert events() == [("user.deleted", {"user_id": str(alice.id)})]


def test_delete_me_twice_is_404_and_writes_nothing(alice, client_for):
    client = client_for(alice)
    assert client.delete("/api/v1/users/me", {"password": PASSWORD}, format="json").status_code == 204
    OutboxEvent.objects.all().delete()
    assert_problem(client.delete("/api/v1/users/me", {"password": PASSWORD}, format="json"), 404, "not-found")
    assert events() == []


def test_delete_me_requires_a_token(api_client):
    assert_problem(api_client.delete("/api/v1/users/me", {"password": PASSWORD}, format="json"), 401, "not-authenticated")


@pytest.mark.parametrize(
    "body, field",
    [
        (None, "password"),
        ({}, "password"),
        ({"password": ""}, "password"),
        ({"password": 12345678}, "password"),
        ({"password": ["x"]}, "password"),
        ({"password": "x" * 129}, "password"),
    ],
)
def test_delete_me_without_a_valid_password_field_is_a_problem_and_writes_nothing(alice, client_for, body, field):
    OutboxEvent.objects.all().delete()
    response = client_for(alice).delete("/api/v1/users/me", body, format="json")
    problem = assert_problem(response, 400, "validation-error")
    assert list(problem["errors"]) == [field]
    assert User.objects.filter(id=alice.id).exists() and events() == []


def test_delete_me_with_a_wrong_password_is_403_and_writes_nothing(make_user, client_for):
    alice, _ = make_user("alice")
    follow_services.follow_create(follower_id=alice.id, followee_username=make_user("bob")[0].username)
    OutboxEvent.objects.all().delete()
    response = client_for(alice).delete("/api/v1/users/me", {"password": PASSWORD + "!"}, format="json")
    assert_problem(response, 403, "wrong-password")
    assert User.objects.filter(id=alice.id).exists() and Follow.objects.count() == 1
    assert RefreshToken.objects.filter(user_id=alice.id).count() == 1 and events() == []


def test_delete_me_password_guesses_are_throttled_per_account(alice, bob, client_for, settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login_account": "3/min"}
    client = client_for(alice)
    for _ in range(3):
        assert_problem(client.delete("/api/v1/users/me", {"password": "guess-guess"}, format="json"), 403, "wrong-password")
    response = client.delete("/api/v1/users/me", {"password": PASSWORD}, format="json")
    assert_problem(response, 429, "rate-limited")
    assert int(response["Retry-After"]) >= 1 and User.objects.filter(id=alice.id).exists()
    # reading one's profile is not throttled, nor is another account's deletion
    assert client.get("/api/v1/users/me").status_code == 200
    assert client_for(bob).delete("/api/v1/users/me", {"password": PASSWORD}, format="json").status_code == 204


@pytest.mark.parametrize(
    "type_, data, match",
    [
        ("user.deleted", {"user_id": 1}, "invalid fields"),
        ("user.deleted", {}, "missing fields"),
        ("user.nope", {}, "unknown event type"),
        ("post.liked", {"post_id": "1", "author_id": "2", "liker_id": "3"}, "produced by feed"),
    ],
)
def test_publish_validates_against_the_catalogue(type_, data, match):
    from shared.events import publish

    with pytest.raises(EventSchemaError, match=match), transaction.atomic():
        publish(type_, data)
    assert events() == []


def test_delete_me_with_an_idempotency_key_replays_the_204(alice, client_for):
    client = client_for(alice)
    body, key = {"password": PASSWORD}, {"HTTP_IDEMPOTENCY_KEY": "bye-1"}
    assert client.delete("/api/v1/users/me", body, format="json", **key).status_code == 204
    OutboxEvent.objects.all().delete()
    replay = client.delete("/api/v1/users/me", body, format="json", **key)  # a retry after a lost answer
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (204, "true")
    assert not User.objects.filter(id=alice.id).exists() and events() == []
