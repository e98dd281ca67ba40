import jwt
import pytest
from accounts import services as account_services
from follows import services as follow_services
from rest_framework.test import APIClient

from shared.auth import ServiceCredential
from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


def test_batch_profiles(alice, bob, service_client):
    body = service_client.get(f"/internal/v1/users?ids={bob.id},{alice.id},999999").json()
    assert body == {"results": [
        {"id": str(alice.id), "username": "alice", "display_name": "alice", "avatar_url": ""},
        {"id": str(bob.id), "username": "bob", "display_name": "bob", "avatar_url": ""},
    ]}


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


@pytest.mark.parametrize(("query", "status"), [
    ("", 400), ("ids=a,b", 400), ("ids=" + ",".join(["1"] * 101), 400), ("ids=" + ",".join(["1"] * 100), 200),
])
def test_batch_bad_input(service_client, query, status):
    assert service_client.get(f"/internal/v1/users?{query}").status_code == status


def test_end_user_token_cannot_call_internal(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {account_services.access_token_issue(user=alice)}")
    assert_problem(client.get(f"/internal/v1/users?ids={alice.id}"), 401, "invalid-token")


@pytest.mark.parametrize("case", ["none", "wrong_secret", "wrong_audience", "expired", "wrong_typ"])
def test_bad_service_credentials(alice, settings, case):
    client = APIClient()
    secret = settings.SERVICE_TOKEN_SECRET
    if case == "wrong_secret":
        token = ServiceCredential(caller="feed", target="users", secret="a-wrong-secret-that-is-long-enough-for-hs256")()
    elif case == "wrong_audience":
        token = ServiceCredential(caller="feed", target="notifications", secret=secret)()
    elif case == "expired":
        token = ServiceCredential(caller="feed", target="users", secret=secret, clock=lambda: 1_000_000)()
    elif case == "wrong_typ":
        token = jwt.encode({"iss": "feed", "aud": "users", "exp": 4_000_000_000}, secret, algorithm="HS256")
    if case != "none":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get(f"/internal/v1/users?ids={alice.id}")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
