"""Each endpoint's query count is fixed: it does not grow with the page size."""

import pytest
from follows import services as follow_services
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def star_with_fans(make_user):
    star, _ = make_user("star")
    fans = [make_user(f"fan{i}")[0] for i in range(25)]
    for fan in fans:
        follow_services.follow_create(follower_id=fan.id, followee_username="star")
        follow_services.follow_create(follower_id=star.id, followee_username=fan.username)
    return star, fans


@pytest.mark.parametrize("path", ["/api/v1/users/star/followers", "/api/v1/users/star/following"])
def test_list_queries_do_not_grow_with_page(star_with_fans, client_for, path, django_assert_num_queries):
    star, _ = star_with_fans
    client = client_for(star)
    client.get("/api/v1/users/star")  # warm the profile cache like a live system
    with django_assert_num_queries(1):
        assert len(client.get(path + "?limit=2").json()["results"]) == 2
    with django_assert_num_queries(1):
        assert len(client.get(path + "?limit=25").json()["results"]) == 25


def test_profile_budget(star_with_fans, client_for, django_assert_max_num_queries):
    _star, fans = star_with_fans
    client = client_for(fans[0])
    with django_assert_max_num_queries(2):  # profile (cache miss) + is_following
        client.get("/api/v1/users/star")
    with django_assert_max_num_queries(1):  # cached profile, is_following only
        client.get("/api/v1/users/star")


@pytest.mark.parametrize(
    ("method", "path", "budget", "status"),
    [
        ("get", "/api/v1/users/me", 1, 200),
        ("patch", "/api/v1/users/me", 4, 200),  # savepoint, row lock, update, release
        # a new follow: 2 savepoints + 2 releases, the caller's row lock (a deleted account cannot follow),
        # the followee, the insert, both counters, the caller's username for the event, the outbox row
        ("post", "/api/v1/users/newcomer/follow", 11, 201),
        ("post", "/api/v1/users/fan1/follow", 8, 200),  # already following: nothing written
        ("delete", "/api/v1/users/fan1/follow", 9, 204),  # + the outbox row (user.unfollowed), the caller's row lock
    ],
)
def test_endpoint_budgets(star_with_fans, make_user, client_for, django_assert_max_num_queries, method, path, budget, status):
    star = star_with_fans[0]
    make_user("newcomer")  # nobody follows them yet
    client = client_for(star)
    with django_assert_max_num_queries(budget):
        response = getattr(client, method)(path, {"bio": "x"} if method == "patch" else None, format="json")
    assert response.status_code == status, response.content


def test_auth_budgets(make_user, django_assert_max_num_queries):
    _, pair = make_user("dana")
    client = APIClient()
    with django_assert_max_num_queries(5):  # account id (per-account throttle), user lookup, savepoint, insert, release
        assert client.post("/api/v1/auth/login", {"username": "dana", "password": PASSWORD}, format="json").status_code == 200
    with django_assert_max_num_queries(5):  # savepoint, lock, spend, insert, release
        assert client.post("/api/v1/auth/refresh", {"refresh": pair.refresh}, format="json").status_code == 200


def test_internal_batch_is_one_query(star_with_fans, django_assert_num_queries, service_client):
    _, fans = star_with_fans
    for size in (2, 25):
        ids = ",".join(str(f.id) for f in fans[:size])
        with django_assert_num_queries(1):
            assert len(service_client.get(f"/internal/v1/users?ids={ids}").json()["results"]) == size


def test_register_logout_jwks_budgets(
    make_user, client_for, api_client, django_assert_max_num_queries, django_assert_num_queries
):
    # two uniqueness lookups, savepoints around the insert, the user and refresh token inserts, the outbox row
    with django_assert_max_num_queries(9):
        assert (
            api_client.post(
                "/api/v1/auth/register",
                {"username": "newbie", "email": "newbie@example.com", "password": "correct horse battery"},
                format="json",
            ).status_code
            == 201
        )
    user, pair = make_user("leaver")
    with django_assert_max_num_queries(4):  # savepoint, find the family, revoke it, release
        assert client_for(user).post("/api/v1/auth/logout", {"refresh": pair.refresh}, format="json").status_code == 204
    with django_assert_num_queries(0):  # keys are in memory
        assert api_client.get("/.well-known/jwks.json").status_code == 200


def test_internal_follower_ids_and_by_username_budgets(star_with_fans, service_client, django_assert_num_queries):
    star, fans = star_with_fans
    for limit in (2, 25):
        with django_assert_num_queries(2):  # the user exists, one keyset page
            body = service_client.get(f"/internal/v1/users/{star.id}/follower-ids?limit={limit}").json()
        assert len(body["ids"]) == limit
        names = ",".join(f.username for f in fans[:limit])
        with django_assert_num_queries(1):
            assert len(service_client.get(f"/internal/v1/users/by-username?usernames={names}").json()["results"]) == limit


@pytest.mark.parametrize("fans", [2, 20])
def test_account_delete_budget_does_not_grow_with_followers(make_user, client_for, django_assert_num_queries, fans):
    leaver, _ = make_user("leaver")
    for i in range(fans):
        fan, _ = make_user(f"delfan{i}")
        follow_services.follow_create(follower_id=fan.id, followee_username="leaver")
        follow_services.follow_create(follower_id=leaver.id, followee_username=fan.username)
    with django_assert_num_queries(12):  # set-based counter fixes, cascades and the outbox row: no per-follower query
        assert client_for(leaver).delete("/api/v1/users/me", {"password": PASSWORD}, format="json").status_code == 204
