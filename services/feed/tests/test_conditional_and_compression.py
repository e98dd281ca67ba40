"""ETags, If-None-Match → 304 and gzip on the feed's public GETs (shared.conditional,
shared.compression), with the users service real."""

import gzip
import json

import pytest

from shared.testing import QueryCounter

pytestmark = pytest.mark.django_db


def post(person, body: str) -> str:
    response = person.api.post("/api/v1/posts", data=json.dumps({"body": body}), content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_user_timeline_etag_304_per_viewer_and_after_a_change(person):
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    post(alice, "first")
    path = f"/api/v1/posts?author={alice.username}"
    first = bob.api.get(path)
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('W/"')
    assert first["Cache-Control"] == "private, no-cache" and "Authorization" in first["Vary"]

    with QueryCounter() as counted:  # the view runs for a 304 too: the same queries as the 200
        again = bob.api.get(path, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    with QueryCounter() as full:
        assert bob.api.get(path).status_code == 200
    assert len(counted) == len(full)

    assert carol.api.get(path, HTTP_IF_NONE_MATCH=etag).status_code == 200  # bob's validator is not carol's

    like = bob.api.post(f"/api/v1/posts/{first.json()['results'][0]['id']}/like")
    assert like.status_code in (200, 201), like.content
    changed = bob.api.get(path, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["results"][0]["liked_by_me"] is True
    assert changed["ETag"] != etag


def test_timeline_page_is_gzipped_with_a_weak_etag_and_length(person):
    alice = person("alice")
    for i in range(12):
        post(alice, f"post number {i}: a body of ordinary length, like people write them on a phone")
    path = f"/api/v1/posts?author={alice.username}"
    plain = alice.api.get(path)
    assert plain.status_code == 200 and len(plain.content) > 1024 and not plain.has_header("Content-Encoding")
    assert "Accept-Encoding" in plain["Vary"]

    packed = alice.api.get(path, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    assert int(packed["Content-Length"]) == len(packed.content) < len(plain.content) // 2
    assert gzip.decompress(packed.content) == plain.content
    assert packed["ETag"] == plain["ETag"] and packed["ETag"].startswith('W/"')

    not_modified = alice.api.get(path, HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=packed["ETag"])
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert "Accept-Encoding" in not_modified["Vary"] and not not_modified.has_header("Content-Encoding")
    assert not_modified["ETag"] == packed["ETag"]


def test_errors_and_writes_get_no_etag(person):
    alice = person("alice")
    missing = alice.api.get("/api/v1/posts?author=nobody_at_all_here")
    assert missing.status_code == 404 and not missing.has_header("ETag")
    created = alice.api.post("/api/v1/posts", data=json.dumps({"body": "hi"}), content_type="application/json")
    assert created.status_code == 201 and not created.has_header("ETag")
