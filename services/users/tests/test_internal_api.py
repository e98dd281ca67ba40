import time

import jwt
import pytest
from accounts import services as account_services
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from follows import services as follow_services
from rest_framework.test import APIClient

from shared.auth import ServiceCredential
from shared.service_keys import SigningKey
from shared.testing import assert_problem, dev_signing_key, service_token

pytestmark = pytest.mark.django_db


def test_batch_profiles(alice, bob, service_client):
    body = service_client.get(f"/internal/v1/users?ids={bob.id},{alice.id},999999").json()
    assert body == {
        "results": [
            {"id": str(alice.id), "username": "alice", "display_name": "alice", "avatar_url": ""},
            {"id": str(bob.id), "username": "bob", "display_name": "bob", "avatar_url": ""},
        ]
    }


def test_by_username(alice, bob, service_client):
    body = service_client.get("/internal/v1/users/by-username?usernames=ALICE,nobody").json()
    assert [p["username"] for p in body["results"]] == ["alice"]


def test_follower_ids_keyset(make_user, service_client):
    star, _ = make_user("star")
    fans = [make_user(f"fan{i}")[0] for i in range(5)]
    for fan in fans:
        follow_services.follow_create(follower_id=fan.id, followee_username="star")
    expected = [str(i) for i in sorted(f.id for f in fans)]  # numeric order, as the keyset
    first = service_client.get(f"/internal/v1/users/{star.id}/follower-ids?limit=3").json()
    assert first == {"ids": expected[:3], "next_after": expected[2]}
    rest = service_client.get(f"/internal/v1/users/{star.id}/follower-ids?limit=3&after={first['next_after']}").json()
    assert rest == {"ids": expected[3:], "next_after": None}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("ids=a,b", 400),
        ("ids=" + ",".join(["1"] * 101), 400),
        ("ids=" + ",".join(["1"] * 100), 200),
    ],
)
def test_batch_bad_input(service_client, query, status):
    assert service_client.get(f"/internal/v1/users?{query}").status_code == status


def test_end_user_token_cannot_call_internal(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {account_services.access_token_issue(user=alice)}")
    assert_problem(client.get(f"/internal/v1/users?ids={alice.id}"), 401, "invalid-token")


@pytest.mark.parametrize("case", ["none", "unknown_key", "wrong_audience", "expired", "wrong_typ", "hs256"])
def test_bad_service_credentials(alice, case):
    client = APIClient()
    if case == "unknown_key":
        token = ServiceCredential(caller="feed", target="users", key=SigningKey("feed-dev", Ed25519PrivateKey.generate()))()
    elif case == "wrong_audience":
        token = service_token("feed", "notifications")
    elif case == "expired":
        token = service_token("feed", "users", clock=lambda: 1_000_000)
    elif case == "wrong_typ":
        key = dev_signing_key("feed")
        token = jwt.encode(
            {"iss": "feed", "aud": "users", "iat": int(time.time()), "exp": int(time.time()) + 60},
            key.private_key,
            algorithm="EdDSA",
            headers={"kid": key.kid},
        )
    elif case == "hs256":  # the old shared-secret credential is not accepted any more
        token = jwt.encode(
            {"iss": "feed", "aud": "users", "exp": 4_000_000_000},
            "a-shared-secret-of-32-bytes-or-more",
            algorithm="HS256",
            headers={"typ": "svc+jwt", "kid": "feed-dev"},
        )
    if case != "none":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_problem(
        client.get(f"/internal/v1/users?ids={alice.id}"), 401, "invalid-token" if case != "none" else "not-authenticated"
    )


def test_a_service_cannot_sign_as_another(alice):
    """notifications' own key, a token that says it is feed: refused (the key is not feed's)."""
    client = APIClient()
    forged = ServiceCredential(caller="feed", target="users", key=dev_signing_key("notifications"))()
    assert jwt.decode(forged, options={"verify_signature": False})["iss"] == "feed"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert_problem(client.get(f"/internal/v1/users/by-username?usernames={alice.username}"), 401, "invalid-token")
    # and notifications' key under feed's kid name is still notifications' key
    renamed = ServiceCredential(
        caller="feed", target="users", key=SigningKey("feed-dev", dev_signing_key("notifications").private_key)
    )()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {renamed}")
    assert_problem(client.get(f"/internal/v1/users/by-username?usernames={alice.username}"), 401, "invalid-token")


@pytest.mark.parametrize(
    ("caller", "path", "status"),
    [
        ("feed", "/internal/v1/users?ids={id}", 200),
        ("notifications", "/internal/v1/users?ids={id}", 200),
        ("feed", "/internal/v1/users/by-username?usernames=alice", 200),
        ("notifications", "/internal/v1/users/by-username?usernames=alice", 403),
        ("feed", "/internal/v1/users/{id}/follower-ids", 200),
        ("notifications", "/internal/v1/users/{id}/follower-ids", 403),
        ("users", "/internal/v1/users?ids={id}", 403),
    ],
)
def test_each_internal_route_admits_only_its_callers(alice, caller, path, status):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {service_token(caller, 'users')}")
    response = client.get(path.format(id=alice.id))
    if status == 403:
        assert_problem(response, 403, "forbidden")
    else:
        assert response.status_code == status, response.content
