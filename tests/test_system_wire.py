"""What a mobile client gets from the edge, end to end through the real gateway: a gzip home
timeline with the right length and Vary, and If-None-Match → 304 with no body on a connection
that stays usable (shared.compression, shared.conditional; the gateway relays them intact)."""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
from harness import wait_until

PASSWORD = "correct horse battery staple"


def register(api: httpx.Client, prefix: str) -> tuple[str, dict]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    response = api.post("/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    assert response.headers.get("content-encoding") is None  # tokens: never compressed
    return name, {"Authorization": f"Bearer {response.json()['access']}"}


def raw_get(api: httpx.Client, path: str, headers: dict) -> tuple[httpx.Response, bytes]:
    """The response as it came off the wire, body not decoded."""
    with api.stream("GET", path, headers=headers) as response:
        return response, b"".join(response.iter_raw())


def test_home_timeline_gzip_and_304_through_the_gateway(system):
    with httpx.Client(base_url=system.gateway_url + "/api/v1", timeout=10) as api:
        alice, alice_auth = register(api, "alice")
        _bob, bob_auth = register(api, "bob")
        assert api.post(f"/users/{alice}/follow", headers=bob_auth).status_code == 201
        for i in range(20):
            created = api.post(
                "/posts", headers=alice_auth, json={"body": f"post {i}: what a mobile timeline looks like, a sentence or two"}
            )
            assert created.status_code == 201, created.text
        try:  # fan-out is asynchronous: post.created → outbox → relay → feed's worker
            wait_until(
                lambda: len(api.get("/feed", headers=bob_auth).json()["results"]) >= 20,
                what="the 20 posts in bob's timeline",
            )
        except AssertionError as exc:
            logs = system.log_tails("feed-relay", "feed-worker", "users-0")
            raise AssertionError(f"{exc}\n{logs}") from None

        identity, plain = raw_get(api, "/feed", {**bob_auth, "Accept-Encoding": "identity"})
        assert identity.status_code == 200 and "content-encoding" not in identity.headers

        packed, body = raw_get(api, "/feed", {**bob_auth, "Accept-Encoding": "gzip"})
        assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) == len(body) < len(plain) // 2
        assert gzip.decompress(body) == plain and len(json.loads(plain)["results"]) == 20
        vary = {v.strip().lower() for v in packed.headers["vary"].split(",")}
        assert {"accept-encoding", "authorization"} <= vary
        etag = packed.headers["etag"]
        assert etag.startswith('W/"') and etag == identity.headers["etag"]
        assert packed.headers["cache-control"] == "private, no-cache"

        not_modified, empty = raw_get(api, "/feed", {**bob_auth, "Accept-Encoding": "gzip", "If-None-Match": etag})
        assert not_modified.status_code == 304 and empty == b""
        assert not_modified.headers["etag"] == etag and "x-request-id" in not_modified.headers
        assert "accept-encoding" in not_modified.headers["vary"].lower()
        # the same keep-alive connection carries the next request after a bodiless 304
        again, again_body = raw_get(api, "/feed", {**bob_auth, "Accept-Encoding": "gzip"})
        assert again.status_code == 200 and gzip.decompress(again_body) == plain

        # alice's validator is hers: bob's ETag on the same URL gets her a full page
        assert api.get("/feed", headers={**alice_auth, "If-None-Match": etag}).status_code == 200
