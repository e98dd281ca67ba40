import pytest
from devices.models import Device

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


def test_register_is_idempotent_per_user_and_delete_removes(register, client_for):
    alice, bob = register("alice"), register("bob")
    client = client_for(alice)
    first = client.post("/api/v1/devices", {"platform": "ios", "token": "abc:123"}, format="json")
    assert first.status_code == 201
    assert {k: first.json()[k] for k in ("platform", "token")} == {"platform": "ios", "token": "abc:123"}
    again = client.post("/api/v1/devices", {"platform": "ios", "token": "abc:123"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert client_for(bob).post("/api/v1/devices", {"platform": "ios", "token": "def:456"}, format="json").status_code == 201
    assert client.delete("/api/v1/devices/abc:123").status_code == 204
    assert list(Device.objects.values_list("user_id", flat=True)) == [bob.id]
    assert_problem(client.delete("/api/v1/devices/abc:123"), 404, "not-found")
    assert list(Device.objects.values_list("user_id", flat=True)) == [bob.id]


def test_a_push_token_belongs_to_the_account_that_registered_it_last(register, client_for):
    alice, bob = register("alice"), register("bob")
    assert client_for(alice).post("/api/v1/devices", {"platform": "ios", "token": "phone:1"}, format="json").status_code == 201
    assert client_for(alice).post("/api/v1/devices", {"platform": "ios", "token": "phone:2"}, format="json").status_code == 201
    # the phone changes hands: bob registers its token; alice's pushes must no longer reach it
    moved = client_for(bob).post("/api/v1/devices", {"platform": "android", "token": "phone:1"}, format="json")
    assert moved.status_code == 201 and moved.json()["platform"] == "android"
    assert sorted(Device.objects.values_list("user_id", "token")) == sorted([(alice.id, "phone:2"), (bob.id, "phone:1")])
    assert_problem(client_for(alice).delete("/api/v1/devices/phone:1"), 404, "not-found")
    # and back again
    assert client_for(alice).post("/api/v1/devices", {"platform": "ios", "token": "phone:1"}, format="json").status_code == 201
    assert sorted(Device.objects.values_list("user_id", "token")) == sorted([(alice.id, "phone:1"), (alice.id, "phone:2")])


@pytest.mark.parametrize(
    "body, field",
    [
        ({"platform": "symbian", "token": "t"}, "platform"),
        ({"platform": "ios"}, "token"),
        ({"platform": "ios", "token": ""}, "token"),
        ({"platform": "ios", "token": 123}, "token"),
        ({"platform": "ios", "token": "has space"}, "token"),
        ({"platform": "ios", "token": "x" * 4097}, "token"),
    ],
)
def test_bad_device_is_a_problem_and_writes_nothing(register, client_for, body, field):
    response = client_for(register("alice")).post("/api/v1/devices", body, format="json")
    problem = assert_problem(response, 400, "validation-error")
    assert list(problem["errors"]) == [field]
    assert Device.objects.count() == 0


def test_writes_accept_an_idempotency_key(register, client_for):
    """docs/api.md: writes accept Idempotency-Key; a replay returns the first response, another body is 422."""
    client = client_for(register("alice"))
    key = {"HTTP_IDEMPOTENCY_KEY": "device-1"}
    first = client.post("/api/v1/devices", {"platform": "ios", "token": "tok:1"}, format="json", **key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    replay = client.post("/api/v1/devices", {"platform": "ios", "token": "tok:1"}, format="json", **key)
    assert (replay.status_code, replay["Idempotent-Replayed"], replay.json()) == (201, "true", first.json())
    assert_problem(
        client.post("/api/v1/devices", {"platform": "ios", "token": "tok:2"}, format="json", **key), 422, "idempotency-key-reused"
    )
    assert list(Device.objects.values_list("token", flat=True)) == ["tok:1"]

    gone = {"HTTP_IDEMPOTENCY_KEY": "device-1-delete"}
    assert client.delete("/api/v1/devices/tok:1", **gone).status_code == 204
    again = client.delete("/api/v1/devices/tok:1", **gone)  # the retry of a delete that went through
    assert (again.status_code, again["Idempotent-Replayed"]) == (204, "true")
    assert_problem(client.delete("/api/v1/devices/tok:1"), 404, "not-found")  # without the key: it is gone
    assert Device.objects.count() == 0
    assert_problem(client.delete("/api/v1/devices/tok:1", HTTP_IDEMPOTENCY_KEY="\x7f"), 400, "validation-error")
