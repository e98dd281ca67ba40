"""Revoked sessions and deleted accounts: their access tokens are refused until they expire."""

import jwt
import pytest
import redis
from accounts.models import User
from django.conf import settings
from follows.models import Follow
from rest_framework.test import APIClient

from shared import revocation
from shared.testing import assert_problem
from tests.conftest import PASSWORD

# committed for real: revocations are written after the transaction commits
pytestmark = pytest.mark.django_db(transaction=True)


def login(name: str) -> dict:
    response = APIClient().post("/api/v1/auth/login", {"username": name, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    return response.json()


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_logout_refuses_that_sessions_access_token_and_no_other(alice):
    phone, laptop = login("alice"), login("alice")
    assert bearer(phone["access"]).get("/api/v1/users/me").status_code == 200
    assert (
        bearer(phone["access"])
        .post("/api/v1/auth/logout", {"refresh": phone["refresh"]}, format="json", HTTP_IDEMPOTENCY_KEY="logout-1")
        .status_code
        == 204
    )
    problem = assert_problem(bearer(phone["access"]).get("/api/v1/users/me"), 401, "invalid-token")
    assert problem["detail"] == "token revoked"
    assert_problem(bearer(phone["access"]).post("/api/v1/users/bob/follow"), 401, "invalid-token")
    assert bearer(laptop["access"]).get("/api/v1/users/me").status_code == 200
    # the marker, in the documented format, lives no longer than a token can
    family = revocation.SID_KEY.format(jwt.decode(phone["access"], options={"verify_signature": False})["sid"])
    client = redis.Redis.from_url(settings.REVOCATION_REDIS_URL)
    assert client.exists(family) and 0 < client.ttl(family) <= settings.ACCESS_TOKEN_TTL + 60


def test_refresh_reuse_refuses_the_familys_access_tokens(alice):
    session = login("alice")
    rotated = APIClient().post("/api/v1/auth/refresh", {"refresh": session["refresh"]}, format="json").json()
    assert bearer(rotated["access"]).get("/api/v1/users/me").status_code == 200
    reuse = APIClient().post("/api/v1/auth/refresh", {"refresh": session["refresh"]}, format="json")
    assert_problem(reuse, 401, "invalid-token")
    for access in (session["access"], rotated["access"]):
        assert_problem(bearer(access).get("/api/v1/users/me"), 401, "invalid-token")
    assert bearer(login("alice")["access"]).get("/api/v1/users/me").status_code == 200  # a new login works


def test_a_deleted_accounts_token_is_refused_everywhere(alice, bob):
    session = login("alice")
    client = bearer(session["access"])
    assert (
        client.delete("/api/v1/users/me", {"password": PASSWORD}, format="json", HTTP_IDEMPOTENCY_KEY="del-1").status_code == 204
    )
    assert redis.Redis.from_url(settings.REVOCATION_REDIS_URL).exists(revocation.USER_KEY.format(alice.id))
    for response in (
        client.get("/api/v1/users/me"),
        client.post("/api/v1/users/bob/follow"),
        client.patch("/api/v1/users/me", {"bio": "still here"}, format="json"),
    ):
        assert_problem(response, 401, "invalid-token")
    assert Follow.objects.count() == 0


def test_a_write_by_an_account_that_no_longer_exists_is_refused_cleanly(alice, bob, client_for):
    client = client_for(alice)
    User.objects.filter(id=alice.id).delete()  # gone without a revocation marker (as if Redis had been down)
    for method in ("post", "delete"):
        response = getattr(client, method)("/api/v1/users/bob/follow")
        problem = assert_problem(response, 401, "invalid-token")
        assert problem["detail"] == "This account no longer exists."
    assert Follow.objects.count() == 0
    assert User.objects.get(id=bob.id).followers_count == 0


def test_revocation_check_fails_open_when_redis_is_unreachable(alice, settings):
    session = login("alice")
    bearer(session["access"]).post(
        "/api/v1/auth/logout", {"refresh": session["refresh"]}, format="json", HTTP_IDEMPOTENCY_KEY="logout-2"
    )
    before = revocation.CHECK_ERRORS._value.get()
    settings.REVOCATION_REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    try:
        # signature, exp, iss and aud still hold; only the revocation set is skipped (docs/decisions.md)
        assert bearer(session["access"]).get("/api/v1/users/me").status_code == 200
        assert revocation.CHECK_ERRORS._value.get() > before
    finally:
        revocation._skip_until = 0.0
