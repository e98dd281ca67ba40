"""Hostile input from a security probe (issue 13): it gets a 400 problem and writes nothing."""

import pytest
from devices.models import Device
from notifications.models import Notification

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", ["[" * 1000, '{"all":' * 1000, "[" * 60_000])
@pytest.mark.parametrize("path", ["/api/v1/devices", "/api/v1/notifications/read"])
def test_deeply_nested_json_is_a_400_problem(register, client_for, path, body):
    response = client_for(register("alice")).post(path, data=body, content_type="application/json")
    assert_problem(response, 400, "malformed-request")
    assert Device.objects.count() == 0 and Notification.objects.count() == 0


def test_every_response_is_nosniff(register, client_for):
    from rest_framework.test import APIClient

    client = client_for(register("alice"))
    for response in (
        client.get("/api/v1/notifications"),
        client.get("/api/v1/notifications/unread-count"),
        APIClient().get("/api/v1/notifications"),
        APIClient().get("/no/such/url"),
    ):
        assert response["X-Content-Type-Options"] == "nosniff"


def test_a_deleted_accounts_token_writes_nothing(register, client_for, users_url, deliver):
    import httpx

    alice = register("alice")
    client = client_for(alice)
    deleted = httpx.request(
        "DELETE",
        f"{users_url}/api/v1/users/me",
        headers={"Authorization": f"Bearer {alice.access}", "Idempotency-Key": "del-1"},
        json={"password": "correct horse battery staple"},
        timeout=10,
    )
    assert deleted.status_code == 204, deleted.text
    for response in (
        client.post("/api/v1/devices", {"platform": "ios", "token": "abc"}, format="json"),
        client.post("/api/v1/notifications/read", {"all": True}, format="json"),
        client.get("/api/v1/notifications"),
    ):
        assert_problem(response, 401, "invalid-token")
    assert Device.objects.count() == 0


def test_user_deleted_event_writes_the_revocation_too(register, client_for, deliver):
    alice = register("alice")
    client = client_for(alice)
    assert client.get("/api/v1/notifications").status_code == 200
    deliver("user.deleted", {"user_id": str(alice.id)})
    assert_problem(client.get("/api/v1/notifications"), 401, "invalid-token")
    assert_problem(client.post("/api/v1/devices", {"platform": "ios", "token": "abc"}, format="json"), 401, "invalid-token")
    assert Device.objects.count() == 0
