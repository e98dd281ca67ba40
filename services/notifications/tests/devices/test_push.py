"""Push delivery through the webhook provider, against a real local HTTP receiver."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from devices import providers, services
from devices.models import Delivery, Device
from django.utils import timezone
from notifications.models import Notification

pytestmark = pytest.mark.django_db


class Receiver:
    """A webhook endpoint: records each request; answers with the queued statuses, then 200."""

    def __init__(self):
        self.requests: list[tuple[dict, dict]] = []
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/push"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    receiver = Receiver()
    settings.PUSH_PROVIDER = "webhook"
    settings.PUSH_WEBHOOK_URL = receiver.url
    settings.PUSH_WEBHOOK_SECRET = "s3cret"
    settings.PUSH_MAX_ATTEMPTS = 3
    providers.provider.cache_clear()
    yield receiver
    receiver.close()
    providers.provider.cache_clear()


def _device(user_id, token="tok-1", platform="android"):
    return Device.objects.create(user_id=user_id, platform=platform, token=token, created_at=timezone.now())


def test_a_burst_is_one_signed_push_per_device(receiver, deliver):
    _device(22)
    _device(22, token="tok-2", platform="ios")
    for liker, post in (("11", "7"), ("12", "8"), ("13", "9")):  # three posts: likes of one post are grouped
        deliver("post.liked", {"post_id": post, "author_id": "22", "liker_id": liker}, producer="feed")
    assert services.push_flush(user_id=22) == 3
    assert len(receiver.requests) == 2
    ids = [str(i) for i in Notification.objects.order_by("id").values_list("id", flat=True)]
    for (headers, body), token in zip(receiver.requests, ["tok-1", "tok-2"], strict=True):
        expected = providers.sign("s3cret", headers["X-Push-Timestamp"], body)
        assert headers["X-Push-Signature"] == expected
        payload = json.loads(body)
        assert (payload["token"], payload["user_id"], payload["notification_ids"], payload["body"]) == (
            token,
            22,
            ids,
            "You have 3 new notifications",
        )
    assert set(Delivery.objects.values_list("status", "attempts")) == {("sent", 1)}
    assert services.push_flush(user_id=22) == 0  # nothing pending: nothing sent twice
    assert len(receiver.requests) == 2


def test_a_failing_webhook_is_retried_with_backoff_then_delivers(receiver, deliver):
    _device(22)
    deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    receiver.statuses = [503]
    with pytest.raises(services.PushRetry) as retry:
        services.push_flush(user_id=22)
    assert retry.value.delay == 2.0
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "webhook answered 503")
    assert services.push_flush(user_id=22) == 0  # not due yet: backoff is respected
    Delivery.objects.update(next_attempt_at=timezone.now())
    assert services.push_flush(user_id=22) == 1
    assert list(Delivery.objects.values_list("status", "attempts")) == [("sent", 2)]
    first_push_id = json.loads(receiver.requests[0][1])["push_id"]
    assert first_push_id == json.loads(receiver.requests[1][1])["push_id"]


def test_give_up_is_recorded_after_max_attempts(receiver, deliver):
    _device(22)
    deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    receiver.statuses = [500, 500, 500]
    for _ in range(2):
        with pytest.raises(services.PushRetry):
            services.push_flush(user_id=22)
        Delivery.objects.update(next_attempt_at=timezone.now())
    assert services.push_flush(user_id=22) == 0
    assert list(Delivery.objects.values_list("status", "attempts", "last_error")) == [("failed", 3, "webhook answered 500")]
    assert len(receiver.requests) == 3


def test_a_permanent_rejection_gives_up_at_once(receiver, deliver):
    _device(22)
    deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    receiver.statuses = [400]
    assert services.push_flush(user_id=22) == 0
    assert list(Delivery.objects.values_list("status", "attempts")) == [("failed", 1)]


def test_an_unreachable_webhook_is_a_retry(receiver, deliver, settings):
    _device(22)
    deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    receiver.close()
    with pytest.raises(services.PushRetry):
        services.push_flush(user_id=22)
    assert list(Delivery.objects.values_list("status", "attempts")) == [("pending", 1)]


def test_no_device_is_recorded(deliver):
    deliver("user.followed", {"follower_id": "11", "followee_id": "22"})
    assert services.push_flush(user_id=22) == 0
    assert list(Delivery.objects.values_list("status", flat=True)) == ["no_device"]


def test_likes_of_one_post_are_one_push_naming_the_latest_and_the_others(receiver, deliver, register):
    likers = [register(f"l{i}") for i in range(4)]
    _device(22)
    for liker in likers:
        deliver("post.liked", {"post_id": "7", "author_id": "22", "liker_id": str(liker.id)}, producer="feed")
    assert services.push_flush(user_id=22) == 1
    ((_, body),) = receiver.requests
    assert json.loads(body)["body"] == f"{likers[-1].username} and 3 others liked your post"


def test_pushes_per_recipient_are_capped(receiver, deliver, settings):
    settings.PUSH_MAX_PER_HOUR = 2
    _device(22)
    for follower in ("11", "12", "13"):
        deliver("user.followed", {"follower_id": follower, "followee_id": "22"})
        services.push_flush(user_id=22)
    assert len(receiver.requests) == 2
    assert sorted(Delivery.objects.values_list("status", flat=True)) == ["capped", "sent", "sent"]
    assert Notification.objects.filter(recipient_id=22).count() == 3  # still listed, just not pushed


def test_a_mention_of_a_user_without_a_device_is_recorded_at_once_and_schedules_no_flush(deliver):
    """Only recipients with a device get a pending delivery and a flush task; the others are
    recorded `no_device` in the notification's own transaction."""
    from celery.signals import before_task_publish

    published: list[str] = []

    def record(sender=None, **_):
        published.append(sender)

    _device(9023)
    before_task_publish.connect(record, weak=False)
    try:
        deliver(
            "post.created",
            {
                "post_id": "7",
                "author_id": "9011",
                "mentioned_user_ids": ["9022", "9023"],
                "created_at": timezone.now().isoformat(),
            },
            producer="feed",
        )
    finally:
        before_task_publish.disconnect(record)
    rows = {
        user: (status, sent_at is not None)
        for user, status, sent_at in Delivery.objects.values_list("user_id", "status", "sent_at")
    }
    assert rows == {9022: ("no_device", True), 9023: ("pending", False)}
    assert published == ["devices.push_flush"]
    assert services.push_flush(user_id=9022) == 0
