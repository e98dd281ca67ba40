"""Users end to end: real gunicorn replicas behind the real gateway, over HTTP."""

from __future__ import annotations

import uuid

import httpx

PASSWORD = "correct horse battery staple"


def register(api, name: str) -> dict:
    response = api.post("/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_register_login_follow_through_the_gateway(api):
    alice, bob = unique("alice"), unique("bob")
    register(api, alice)
    bob_id = register(api, bob)["user"]["id"]
    login = api.post("/auth/login", json={"email": f"{alice.upper()}@EXAMPLE.com", "password": PASSWORD})
    assert login.status_code == 200
    auth = {"Authorization": f"Bearer {login.json()['access']}"}
    assert api.post(f"/users/{bob}/follow", headers=auth).status_code == 201
    assert api.post(f"/users/{bob}/follow", headers=auth).status_code == 200
    profile = api.get(f"/users/{bob}", headers=auth).json()
    assert (profile["id"], profile["followers_count"], profile["is_following"]) == (bob_id, 1, True)
    followers = api.get(f"/users/{bob}/followers", headers=auth).json()
    assert [p["username"] for p in followers["results"]] == [alice] and followers["next_cursor"] is None
    assert api.delete(f"/users/{bob}/follow", headers=auth).status_code == 204
    assert api.get(f"/users/{bob}", headers=auth).json()["followers_count"] == 0


def test_refresh_rotation_and_reuse_through_the_gateway(api):
    tokens = register(api, unique("carol"))
    first = api.post("/auth/refresh", json={"refresh": tokens["refresh"]})
    assert first.status_code == 200
    reuse = api.post("/auth/refresh", json={"refresh": tokens["refresh"]})
    assert reuse.status_code == 401 and reuse.headers["content-type"] == "application/problem+json"
    assert api.post("/auth/refresh", json={"refresh": first.json()["refresh"]}).status_code == 401


def test_jwks_is_public_and_internal_is_not(system, api):
    with httpx.Client(base_url=system.gateway_url, timeout=5) as edge:
        jwks = edge.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"][0]["alg"] == "EdDSA"
        for path in ("/internal/v1/users?ids=1", "/metrics", "/health/ready", "/api/schema/"):
            response = edge.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"


def test_gateway_rejects_bad_tokens_before_the_service(api):
    response = api.get("/users/me", headers={"Authorization": "Bearer not.a.token"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_spoofed_identity_header_is_ignored_end_to_end(api):
    me = register(api, unique("dave"))
    other = register(api, unique("erin"))
    response = api.get(
        "/users/me",
        headers={
            "Authorization": f"Bearer {me['access']}",
            "X-User-Id": other["user"]["id"],
            "X-Username": other["user"]["username"],
        },
    )
    assert response.json()["id"] == me["user"]["id"]


def test_both_replicas_serve(system):
    for replica in range(2):
        response = httpx.get(system.service_url("users", replica) + "/health/ready", timeout=5)
        assert response.status_code == 200 and response.json()["status"] == "ok"


def test_metrics_sum_every_gunicorn_worker(system):
    """Multiprocess mode: /metrics counts the requests of both workers of a replica, not of
    whichever worker answers the scrape."""
    url = system.service_url("users", 1)
    metric = 'http_requests_total{method="GET",route="health/live",status="200"}'

    def count() -> float:
        for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(metric):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    for _ in range(30):  # a new connection each time: the kernel spreads them over the workers
        assert httpx.get(url + "/health/live", timeout=5).status_code == 200
    assert count() == before + 30
