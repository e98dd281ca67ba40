import json

import pytest
from accounts.models import RefreshToken, User
from rest_framework.test import APIClient

from shared.testing import assert_problem
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def register(client, **overrides):
    body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD, **overrides}
    return client.post("/api/v1/auth/register", body, format="json")


def test_register_returns_user_and_tokens(api_client):
    response = register(api_client, display_name="Carol C")
    assert response.status_code == 201
    body = response.json()
    user = User.objects.get(username="carol")
    assert body["user"] == {
        "id": str(user.id),
        "username": "carol",
        "display_name": "Carol C",
        "avatar_url": "",
        "bio": "",
        "followers_count": 0,
        "following_count": 0,
        "email": "carol@example.com",
        "created_at": body["user"]["created_at"],
    }
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert user.password.startswith("argon2$argon2id$")
    me = APIClient()
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert me.get("/api/v1/users/me").json()["username"] == "carol"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "x" * 31}, "username"),
        ({"username": "bad name!"}, "username"),
        ({"username": "émile"}, "username"),
        ({"username": 12345}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a" * 250 + "@x.io"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "password123"}, "password"),
        ({"password": "12345678901"}, "password"),
        ({"password": ["list"]}, "password"),
        ({"display_name": "d" * 51}, "display_name"),
    ],
)
def test_register_rejects_bad_fields(api_client, overrides, field):
    body = assert_problem(register(api_client, **overrides), 400, "validation-error")
    assert list(body["errors"]) == [field]
    assert User.objects.count() == 0


def test_register_missing_fields(api_client):
    body = assert_problem(api_client.post("/api/v1/auth/register", {}, format="json"), 400, "validation-error")
    assert sorted(body["errors"]) == ["email", "password", "username"]
    assert body["errors"]["username"] == ["This field is required."]


def test_register_ignores_unknown_fields(api_client):
    response = register(api_client, is_admin=True, followers_count=999)
    assert response.status_code == 201
    assert response.json()["user"]["followers_count"] == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "ALICE", "email": "new@example.com"}, "username"),
        ({"username": "newname", "email": "Alice@EXAMPLE.com"}, "email"),
    ],
)
def test_register_duplicates_any_case(api_client, alice, overrides, field):
    body = assert_problem(register(api_client, **overrides), 400, "validation-error")
    assert list(body["errors"]) == [field]
    assert User.objects.count() == 1


def test_malformed_json(api_client):
    response = api_client.post("/api/v1/auth/register", data="{not json", content_type="application/json")
    body = assert_problem(response, 400, "malformed-request")
    assert "JSON" in body["detail"]
    assert User.objects.count() == 0


def test_json_array_body(api_client):
    response = api_client.post("/api/v1/auth/register", data="[1,2]", content_type="application/json")
    assert_problem(response, 400, "validation-error")


def test_wrong_content_type(api_client):
    response = api_client.post("/api/v1/auth/register", data="username=x", content_type="application/x-www-form-urlencoded")
    assert_problem(response, 415, "unsupported-media-type")


def test_oversized_body(api_client, settings):
    payload = json.dumps({"username": "carol", "email": "c@example.com", "password": "x" * 70_000})
    response = api_client.post("/api/v1/auth/register", data=payload, content_type="application/json")
    body = assert_problem(response, 413, "payload-too-large")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in body["detail"]
    assert User.objects.count() == 0


def test_method_not_allowed(api_client):
    assert_problem(api_client.get("/api/v1/auth/register"), 405, "method-not-allowed")


def test_unknown_url_is_problem_json(api_client):
    assert_problem(api_client.get("/api/v1/nope"), 404, "not-found")


@pytest.mark.parametrize("login", ["alice", "ALICE", "alice@example.com", "Alice@Example.COM"])
def test_login_by_username_or_email_case_insensitive(api_client, alice, login):
    key = "email" if "@" in login else "username"
    response = api_client.post("/api/v1/auth/login", {key: login, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert response.json()["user"]["id"] == str(alice.id)


def test_login_unknown_user_and_wrong_password_answer_the_same(api_client, alice):
    wrong = api_client.post("/api/v1/auth/login", {"username": "alice", "password": "nope-nope-nope"}, format="json")
    unknown = api_client.post("/api/v1/auth/login", {"username": "nobody", "password": "nope-nope-nope"}, format="json")
    assert assert_problem(wrong, 401, "invalid-token") == assert_problem(unknown, 401, "invalid-token")
    assert wrong.json()["detail"] == "Invalid username/email or password."
    assert RefreshToken.objects.count() == 1  # only alice's registration token


def test_login_throttled_per_account(api_client, alice, settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login_account": "3/min"}
    for i in range(3):
        client = APIClient(REMOTE_ADDR=f"10.0.0.{i}")
        client.post("/api/v1/auth/login", {"username": "alice", "password": "bad-guess-x"}, format="json")
    response = APIClient(REMOTE_ADDR="10.0.0.9").post(
        "/api/v1/auth/login", {"username": "ALICE", "password": PASSWORD}, format="json"
    )
    assert_problem(response, 429, "rate-limited")
    assert int(response["Retry-After"]) >= 1
    other = APIClient(REMOTE_ADDR="10.0.0.9").post("/api/v1/auth/login", {"username": "bob", "password": PASSWORD}, format="json")
    assert other.status_code == 401  # another account from the same IP is not blocked


def test_login_throttled_per_ip(api_client, settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login_ip": "2/min"}
    for name in ("a1", "a2"):
        api_client.post("/api/v1/auth/login", {"username": name, "password": "whatever-x"}, format="json")
    response = api_client.post("/api/v1/auth/login", {"username": "a3", "password": "whatever-x"}, format="json")
    assert_problem(response, 429, "rate-limited")


def test_refresh_rotates_and_reuse_revokes_family(api_client, make_user):
    _, pair = make_user("dave")
    first = api_client.post("/api/v1/auth/refresh", {"refresh": pair.refresh}, format="json")
    assert first.status_code == 200
    rotated = first.json()["refresh"]
    assert rotated != pair.refresh and first.json()["access"]
    # the spent token comes back: the thief's (or the victim's) reuse revokes the family
    reuse = api_client.post("/api/v1/auth/refresh", {"refresh": pair.refresh}, format="json")
    assert_problem(reuse, 401, "invalid-token")
    assert RefreshToken.objects.filter(revoked_at__isnull=True).count() == 0
    after = api_client.post("/api/v1/auth/refresh", {"refresh": rotated}, format="json")
    assert_problem(after, 401, "invalid-token")


@pytest.mark.parametrize("refresh", ["garbage", "", 42])
def test_refresh_rejects_bad_tokens(api_client, refresh):
    response = api_client.post("/api/v1/auth/refresh", {"refresh": refresh}, format="json")
    assert response.status_code in (400, 401)
    assert response["Content-Type"] == "application/problem+json"


def test_logout_revokes_refresh(api_client, make_user, client_for):
    user, pair = make_user("erin")
    response = client_for(user).post("/api/v1/auth/logout", {"refresh": pair.refresh}, format="json")
    assert response.status_code == 204
    assert_problem(api_client.post("/api/v1/auth/refresh", {"refresh": pair.refresh}, format="json"), 401, "invalid-token")


def test_logout_cannot_revoke_someone_elses_token(make_user, client_for, api_client):
    _victim, pair = make_user("vic")
    attacker, _ = make_user("mallory")
    assert client_for(attacker).post("/api/v1/auth/logout", {"refresh": pair.refresh}, format="json").status_code == 204
    assert api_client.post("/api/v1/auth/refresh", {"refresh": pair.refresh}, format="json").status_code == 200


def test_logout_requires_auth(api_client):
    assert_problem(api_client.post("/api/v1/auth/logout", {"refresh": "x"}, format="json"), 401, "not-authenticated")


def test_logout_accepts_an_idempotency_key(api_client, make_user, client_for):
    user, pair = make_user("fred")
    client, key = client_for(user), {"HTTP_IDEMPOTENCY_KEY": "logout-1"}
    assert client.post("/api/v1/auth/logout", {"refresh": pair.refresh}, format="json", **key).status_code == 204
    replay = client.post("/api/v1/auth/logout", {"refresh": pair.refresh}, format="json", **key)
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (204, "true")
    assert_problem(client.post("/api/v1/auth/logout", {"refresh": "other"}, format="json", **key), 422, "idempotency-key-reused")
    assert_problem(api_client.post("/api/v1/auth/refresh", {"refresh": pair.refresh}, format="json"), 401, "invalid-token")


def test_login_throttle_per_account_counts_username_and_email_as_one_account(api_client, alice, settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login_account": "3/min"}
    for i, login in enumerate(["alice", "alice@example.com", "ALICE@Example.com"]):
        APIClient(REMOTE_ADDR=f"10.0.1.{i}").post(
            "/api/v1/auth/login", {"username": login, "password": "bad-guess-x"}, format="json"
        )
    for login in ({"username": "Alice"}, {"email": "alice@example.com"}):
        response = APIClient(REMOTE_ADDR="10.0.1.9").post("/api/v1/auth/login", {**login, "password": PASSWORD}, format="json")
        assert_problem(response, 429, "rate-limited")
    # a name that matches no account has its own bucket, just as strict
    for _ in range(3):
        assert (
            api_client.post("/api/v1/auth/login", {"username": "nobody", "password": "x-x-x-x-x"}, format="json").status_code
            == 401
        )
    assert_problem(
        api_client.post("/api/v1/auth/login", {"username": "NOBODY", "password": "x-x-x-x-x"}, format="json"), 429, "rate-limited"
    )


def test_login_throttle_keys_by_the_client_ip_the_gateway_resolved(api_client, settings):
    """Behind a load balancer every request carries `X-Forwarded-For: <client>, <balancer>`: the
    per-IP bucket is the address the gateway resolved (X-Client-IP), believed only from a gateway
    peer (TRUSTED_GATEWAY_PEERS), never the balancer's address from X-Forwarded-For."""
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login_ip": "2/min"}
    settings.TRUSTED_GATEWAY_PEERS = "127.0.0.1/32"
    names = iter(range(100))

    def login(client_ip, remote="127.0.0.1"):
        client = APIClient(REMOTE_ADDR=remote, HTTP_X_CLIENT_IP=client_ip, HTTP_X_FORWARDED_FOR=f"{client_ip}, 10.9.9.9")
        body = {"username": f"nobody{next(names)}", "password": "whatever-x"}  # no per-account limit in play
        return client.post("/api/v1/auth/login", body, format="json").status_code

    # from the gateway: one bucket per client, however many share the balancer
    assert [login(f"203.0.113.{i}") for i in range(1, 6)] == [401] * 5
    assert [login("203.0.113.9") for _ in range(3)] == [401, 401, 429]
    # from a peer that is no gateway, X-Client-IP (and X-Forwarded-For) mean nothing: the peer is the client
    assert [login(f"198.51.100.{i}", remote="10.2.3.4") for i in range(3)] == [401, 401, 429]
    # a value that is no IP address is ignored
    assert [login("not-an-ip") for _ in range(3)] == [401, 401, 429]  # keyed by the peer, 127.0.0.1
