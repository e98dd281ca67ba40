import pytest
from django.utils import timezone
from notifications.models import Notification

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_and_fans(register, deliver):
    alice = register("alice")
    fans = [register("fan", display_name=f"Fan {i}") for i in range(3)]
    for fan in fans:
        deliver("user.followed", {"follower_id": str(fan.id), "followee_id": str(alice.id)})
    return alice, fans


def test_list_is_newest_first_with_actor_profiles(alice_and_fans, client_for, django_assert_max_num_queries):
    alice, fans = alice_and_fans
    client = client_for(alice)
    with django_assert_max_num_queries(1):
        response = client.get("/api/v1/notifications")
    assert response.status_code == 200
    body = response.json()
    ids = list(Notification.objects.filter(recipient_id=alice.id).order_by("-id").values_list("id", flat=True))
    assert [r["id"] for r in body["results"]] == [str(i) for i in ids]
    assert [r["actor"] for r in body["results"]] == [
        {"id": str(f.id), "username": f.username, "display_name": f"Fan {i}", "avatar_url": ""}
        for i, f in reversed(list(enumerate(fans)))
    ]
    assert {(r["kind"], r["post_id"], r["read"]) for r in body["results"]} == {("follow", None, False)}
    assert body["next_cursor"] is None


def test_cursor_pages_and_query_budget_does_not_grow(alice_and_fans, client_for, django_assert_max_num_queries):
    alice, fans = alice_and_fans
    client = client_for(alice)
    first = client.get("/api/v1/notifications?limit=2").json()
    assert len(first["results"]) == 2 and first["next_cursor"]
    with django_assert_max_num_queries(1):
        second = client.get(f"/api/v1/notifications?limit=2&cursor={first['next_cursor']}").json()
    assert len(second["results"]) == 1 and second["next_cursor"] is None
    assert [r["actor"]["id"] for r in first["results"] + second["results"]] == [str(f.id) for f in reversed(fans)]


def test_unread_count_and_mark_read_by_ids_and_all(alice_and_fans, client_for, django_capture_on_commit_callbacks):
    alice, _fans = alice_and_fans
    client = client_for(alice)
    assert client.get("/api/v1/notifications/unread-count").json() == {"count": 3}
    newest = Notification.objects.filter(recipient_id=alice.id).order_by("-id").first()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/notifications/read", {"ids": [str(newest.id)]}, format="json").status_code == 204
    assert client.get("/api/v1/notifications/unread-count").json() == {"count": 2}  # served from Redis, fresh
    unread = client.get("/api/v1/notifications?unread=true").json()["results"]
    assert len(unread) == 2 and str(newest.id) not in {r["id"] for r in unread}
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/notifications/read", {"all": True}, format="json").status_code == 204
    assert client.get("/api/v1/notifications/unread-count").json() == {"count": 0}
    assert client.get("/api/v1/notifications?unread=true").json()["results"] == []


def test_unread_count_follows_new_notifications(alice_and_fans, client_for, deliver, register):
    alice, _ = alice_and_fans
    client = client_for(alice)
    assert client.get("/api/v1/notifications/unread-count").json() == {"count": 3}
    deliver("user.followed", {"follower_id": "999", "followee_id": str(alice.id)})
    assert client.get("/api/v1/notifications/unread-count").json() == {"count": 4}


def test_mark_read_ignores_other_users_notifications(alice_and_fans, client_for, register):
    alice, fans = alice_and_fans
    theirs = Notification.objects.filter(recipient_id=alice.id).first()
    response = client_for(fans[0]).post("/api/v1/notifications/read", {"ids": [str(theirs.id)]}, format="json")
    assert response.status_code == 204
    assert Notification.objects.filter(recipient_id=alice.id, read_at__isnull=True).count() == 3


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "non_field_errors"),
        ({"ids": ["1"], "all": True}, "non_field_errors"),
        ({"all": False}, "all"),
        ({"all": "true"}, "all"),
        ({"ids": []}, "ids"),
        ({"ids": ["x"]}, "ids"),
        ({"ids": "1"}, "ids"),
        ({"ids": ["1"] * 1001}, "ids"),
        ({"ids": ["1"], "extra": 1}, "extra"),
    ],
)
def test_mark_read_bad_input_is_a_problem_and_writes_nothing(alice_and_fans, client_for, body, field):
    alice, _ = alice_and_fans
    response = client_for(alice).post("/api/v1/notifications/read", body, format="json")
    problem = assert_problem(response, 400, "validation-error")
    assert [name.split(".")[0] for name in problem["errors"]] == [field]
    assert Notification.objects.filter(recipient_id=alice.id, read_at__isnull=True).count() == 3


@pytest.mark.parametrize("query, field", [("unread=yes", "unread"), ("limit=0", "limit"), ("cursor=forged", "cursor")])
def test_list_bad_query_is_a_problem(alice_and_fans, client_for, query, field):
    alice, _ = alice_and_fans
    problem = assert_problem(client_for(alice).get(f"/api/v1/notifications?{query}"), 400, "validation-error")
    assert list(problem["errors"]) == [field]


def test_endpoints_require_a_token(api_client):
    for method, path in [
        ("get", "/api/v1/notifications"),
        ("get", "/api/v1/notifications/unread-count"),
        ("post", "/api/v1/notifications/read"),
        ("post", "/api/v1/devices"),
    ]:
        assert_problem(getattr(api_client, method)(path), 401, "not-authenticated")


def test_deleted_actor_is_shown_without_profile(register, deliver, client_for):
    alice = register("alice")
    deliver("user.followed", {"follower_id": "987654321", "followee_id": str(alice.id)})
    result = client_for(alice).get("/api/v1/notifications").json()["results"]
    assert [r["actor"] for r in result] == [{"id": "987654321", "username": "", "display_name": "", "avatar_url": ""}]


def test_list_query_uses_the_recipient_index():
    from notifications import selectors  # noqa: F401

    from shared.testing import explain

    plan = explain(Notification.objects.filter(recipient_id=1).order_by("-id")[:21])
    assert "notification_" in plan and "Seq Scan" not in plan
    plan = explain(Notification.objects.filter(recipient_id=1, read_at__isnull=True))
    assert "Seq Scan" not in plan


def test_notifications_are_stored_in_monthly_partitions(deliver):
    from notifications.partitions import partition_name

    deliver("user.followed", {"follower_id": "1", "followee_id": "2"})
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM notification")
        assert cursor.fetchall() == [(partition_name(timezone.now().date().replace(day=1)),)]


def test_mark_read_accepts_an_idempotency_key(alice_and_fans, client_for):
    alice, _ = alice_and_fans
    client = client_for(alice)
    newest = Notification.objects.filter(recipient_id=alice.id).order_by("-id").first()
    body, key = {"ids": [str(newest.id)]}, {"HTTP_IDEMPOTENCY_KEY": "read-1"}
    assert client.post("/api/v1/notifications/read", body, format="json", **key).status_code == 204
    replay = client.post("/api/v1/notifications/read", body, format="json", **key)
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (204, "true")
    assert_problem(client.post("/api/v1/notifications/read", {"all": True}, format="json", **key), 422, "idempotency-key-reused")
    assert Notification.objects.filter(recipient_id=alice.id, read_at__isnull=True).count() == 2
