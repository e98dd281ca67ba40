"""ETags, If-None-Match → 304 and gzip on the notifications page and the unread count
(shared.conditional, shared.compression): per viewer, and a 304 of the unread count is as cheap as
its 200 (Redis, no query)."""

import gzip

import pytest
from notifications.models import Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_and_fans(register, deliver):
    alice = register("alice")
    fans = [register("fan", display_name=f"Fan number {i}") for i in range(8)]
    for fan in fans:
        deliver("user.followed", {"follower_id": str(fan.id), "followee_id": str(alice.id)})
    return alice, fans


def test_unread_count_etag_304_without_queries_and_after_a_change(
    alice_and_fans, client_for, django_capture_on_commit_callbacks, django_assert_num_queries
):
    alice, fans = alice_and_fans
    client = client_for(alice)
    first = client.get("/api/v1/notifications/unread-count")  # computes and caches the count
    etag = first["ETag"]
    assert first.json() == {"count": 8} and etag.startswith('W/"')
    assert first["Cache-Control"] == "private, no-cache" and "Authorization" in first["Vary"]
    with django_assert_num_queries(0):  # the cached count is the validator's input: Redis only
        again = client.get("/api/v1/notifications/unread-count", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag

    # another user with the same count: their own validator, not alice's
    assert client_for(fans[0]).get("/api/v1/notifications/unread-count", HTTP_IF_NONE_MATCH=etag).status_code == 200

    newest = Notification.objects.filter(recipient_id=alice.id).order_by("-id").first()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/notifications/read", {"ids": [str(newest.id)]}, format="json").status_code == 204
    changed = client.get("/api/v1/notifications/unread-count", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json() == {"count": 7} and changed["ETag"] != etag


def test_notifications_page_etag_and_gzip(alice_and_fans, client_for, django_capture_on_commit_callbacks):
    alice, _fans = alice_and_fans
    client = client_for(alice)
    plain = client.get("/api/v1/notifications")
    assert plain.status_code == 200 and len(plain.content) > 1024 and not plain.has_header("Content-Encoding")
    packed = client.get("/api/v1/notifications", HTTP_ACCEPT_ENCODING="gzip")
    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    assert int(packed["Content-Length"]) == len(packed.content) < len(plain.content)
    assert gzip.decompress(packed.content) == plain.content
    assert packed["ETag"] == plain["ETag"]

    not_modified = client.get("/api/v1/notifications", HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=packed["ETag"])
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert {"Accept-Encoding", "Authorization"} <= {v.strip() for v in not_modified["Vary"].split(",")}

    # marking everything read changes the page (read: true): the old validator no longer matches
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/notifications/read", {"all": True}, format="json").status_code == 204
    fresh = client.get("/api/v1/notifications", HTTP_IF_NONE_MATCH=plain["ETag"])
    assert fresh.status_code == 200 and all(r["read"] for r in fresh.json()["results"])
