"""Idempotency-Key on users' authenticated writes (docs/api.md: a replay returns the first response)."""

import pytest
from follows.models import Follow

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


def test_follow_replay_returns_first_response(alice, bob, client_for):
    client = client_for(alice)
    first = client.post("/api/v1/users/bob/follow", HTTP_IDEMPOTENCY_KEY="k-1")
    replay = client.post("/api/v1/users/bob/follow", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    assert Follow.objects.count() == 1


def test_same_key_different_body_is_422(alice, client_for):
    client = client_for(alice)
    assert client.patch("/api/v1/users/me", {"bio": "one"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 200
    response = client.patch("/api/v1/users/me", {"bio": "two"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert_problem(response, 422, "idempotency-key-reused")
    alice.refresh_from_db()
    assert alice.bio == "one"


def test_keys_are_scoped_per_user(alice, bob, client_for, make_user):
    carol, _ = make_user("carol")
    assert client_for(alice).post("/api/v1/users/carol/follow", HTTP_IDEMPOTENCY_KEY="same").status_code == 201
    assert client_for(bob).post("/api/v1/users/carol/follow", HTTP_IDEMPOTENCY_KEY="same").status_code == 201
    carol.refresh_from_db()
    assert carol.followers_count == 2


def test_bad_key_is_400(alice, bob, client_for):
    response = client_for(alice).post("/api/v1/users/bob/follow", HTTP_IDEMPOTENCY_KEY="x" * 300)
    assert_problem(response, 400, "validation-error")
    assert Follow.objects.count() == 0


def test_expired_keys_are_pruned_and_an_expired_key_is_free_again(alice, bob, client_for):
    from datetime import timedelta

    from django.utils import timezone

    from shared.idempotency import prune_idempotency_keys
    from shared.platform.models import IdempotencyKey

    client = client_for(alice)
    assert client.post("/api/v1/users/bob/follow", HTTP_IDEMPOTENCY_KEY="old").status_code == 201
    assert client.delete("/api/v1/users/bob/follow", HTTP_IDEMPOTENCY_KEY="kept").status_code == 204
    IdempotencyKey.objects.filter(key__startswith="users.follow:").update(expires_at=timezone.now() - timedelta(seconds=1))
    again = client.post("/api/v1/users/bob/follow", HTTP_IDEMPOTENCY_KEY="old")  # expired: runs again, not a replay
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert Follow.objects.count() == 1
    assert prune_idempotency_keys(now=timezone.now() + timedelta(days=1, seconds=1)) == 2
    assert not IdempotencyKey.objects.exists()
