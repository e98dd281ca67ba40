"""ETags, If-None-Match → 304 and gzip on the users service's public GETs (shared.conditional,
shared.compression): per viewer, never on responses carrying tokens or an email address."""

import gzip

import pytest
from follows import services as follow_services
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_profile_etag_is_weak_private_and_per_viewer(alice, bob, make_user, client_for):
    carol = make_user("carol")[0]
    as_bob, as_carol = client_for(bob), client_for(carol)
    first = as_bob.get("/api/v1/users/alice")
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('W/"')
    assert first["Cache-Control"] == "private, no-cache"
    assert "Authorization" in first["Vary"]

    again = as_bob.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == etag and again["Cache-Control"] == "private, no-cache"
    assert "Authorization" in again["Vary"]
    assert as_bob.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH=f'"x", {etag}').status_code == 304
    assert as_bob.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH="*").status_code == 304
    assert as_bob.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH=etag.removeprefix("W/")).status_code == 304

    # carol sees the same JSON (neither follows alice), but bob's validator is not hers
    carols = as_carol.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH=etag)
    assert carols.status_code == 200 and carols.json() == first.json() and carols["ETag"] != etag

    # a change of the representation: a new ETag, the old one no longer matches
    follow_services.follow_create(follower_id=bob.id, followee_username="alice")
    changed = as_bob.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["is_following"] is True
    assert changed["ETag"] != etag


def test_own_profile_and_tokens_get_no_etag_and_no_compression(make_user, client_for, settings):
    settings.COMPRESS_MIN_BYTES = 1  # large enough by size: only no-store keeps them identity
    user, _ = make_user("dora")
    me = client_for(user).get("/api/v1/users/me", HTTP_ACCEPT_ENCODING="gzip")
    assert me.status_code == 200 and me["Cache-Control"] == "no-store"
    assert not me.has_header("ETag") and not me.has_header("Content-Encoding")
    assert me.json()["email"] == "dora@example.com"
    login = APIClient().post(
        "/api/v1/auth/login", {"username": "dora", "password": PASSWORD}, format="json", HTTP_ACCEPT_ENCODING="gzip"
    )
    assert login.status_code == 200 and login["Cache-Control"] == "no-store"
    assert not login.has_header("Content-Encoding") and "access" in login.json()


def test_jwks_etag_is_public_and_revalidates(api_client):
    first = api_client.get("/.well-known/jwks.json")
    etag = first["ETag"]
    assert first.status_code == 200 and first["Cache-Control"] == "public, max-age=300"
    assert "Authorization" not in first.get("Vary", "")
    again = api_client.get("/.well-known/jwks.json", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert again["Cache-Control"] == "public, max-age=300"


def test_follower_list_is_gzipped_when_accepted(alice, make_user, client_for):
    for i in range(20):  # a full default page
        fan = make_user(f"fan{i}")[0]
        follow_services.follow_create(follower_id=fan.id, followee_username="alice")
    client = client_for(alice)
    plain = client.get("/api/v1/users/alice/followers")
    assert plain.status_code == 200 and not plain.has_header("Content-Encoding")
    assert len(plain.content) > 1024 and "Accept-Encoding" in plain["Vary"]

    packed = client.get("/api/v1/users/alice/followers", HTTP_ACCEPT_ENCODING="br;q=1, gzip;q=0.5")
    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    assert int(packed["Content-Length"]) == len(packed.content) < len(plain.content)
    assert gzip.decompress(packed.content) == plain.content
    assert packed["ETag"] == plain["ETag"]  # weak: the same representation in either encoding

    refused = client.get("/api/v1/users/alice/followers", HTTP_ACCEPT_ENCODING="gzip;q=0, *")
    assert not refused.has_header("Content-Encoding") and refused.content == plain.content
    # a 304 carries the Vary of the 200 it stands for
    not_modified = client.get("/api/v1/users/alice/followers", HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=packed["ETag"])
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert "Accept-Encoding" in not_modified["Vary"] and not not_modified.has_header("Content-Encoding")


def test_small_bodies_are_not_compressed(alice, client_for):
    response = client_for(alice).get("/api/v1/users/alice", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200 and len(response.content) < 1024
    assert not response.has_header("Content-Encoding") and "Accept-Encoding" not in response.get("Vary", "")


def test_a_304_runs_the_same_queries_as_the_200(alice, bob, client_for, django_assert_max_num_queries):
    client = client_for(bob)
    etag = client.get("/api/v1/users/alice")["ETag"]  # warms the profile cache
    with django_assert_max_num_queries(1):  # is_following; the view runs, the body is not sent
        assert client.get("/api/v1/users/alice", HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_an_already_encoded_body_is_left_alone(rf):
    from django.http import HttpResponse

    from shared.compression import CompressionMiddleware

    body = b'{"x":"' + b"a" * 4000 + b'"}'
    encoded = CompressionMiddleware(
        lambda request: HttpResponse(body, content_type="application/json", headers={"Content-Encoding": "br"})
    )
    response = encoded(rf.get("/api/v1/users/alice", HTTP_ACCEPT_ENCODING="gzip"))
    assert response["Content-Encoding"] == "br" and response.content == body
    plain = CompressionMiddleware(lambda request: HttpResponse(body, content_type="application/json"))
    assert plain(rf.get("/api/v1/users/alice", HTTP_ACCEPT_ENCODING="gzip"))["Content-Encoding"] == "gzip"
    # calls between services (httpx asks for gzip by default) stay identity
    internal = plain(rf.get("/internal/v1/users", HTTP_ACCEPT_ENCODING="gzip"))
    assert not internal.has_header("Content-Encoding") and internal.content == body
