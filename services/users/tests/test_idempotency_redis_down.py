"""Idempotency-Key keys hold while Redis is unreachable: the record is a row of users' own
`idempotency_key` table, written in the follow's transaction, so a real users process (gunicorn,
production config) pointed at a Redis where nothing listens still applies a follow once."""

import os
import socket
from pathlib import Path

import httpx
import pytest
from accounts import services as account_services
from follows.models import Follow

from shared.platform.models import IdempotencyKey
from shared.testing import ServiceProcess

pytestmark = pytest.mark.django_db(transaction=True)  # the users process must see the users

USERS_DIR = Path(__file__).resolve().parents[1]


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_follow_keys_hold_while_redis_is_unreachable(make_user):
    alice, _ = make_user("alice")
    make_user("bob")
    make_user("carol")
    users = ServiceProcess(
        USERS_DIR,
        "users",
        {**os.environ, "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "2", "REDIS_URL": f"redis://127.0.0.1:{_unused_port()}/0"},
    )
    headers = {"Authorization": f"Bearer {account_services.access_token_issue(user=alice)}", "Idempotency-Key": "k-1"}
    try:
        first = httpx.post(users.url + "/api/v1/users/bob/follow", headers=headers, timeout=30)
        replay = httpx.post(users.url + "/api/v1/users/bob/follow", headers=headers, timeout=30)
        reused = httpx.post(users.url + "/api/v1/users/carol/follow", headers=headers, timeout=30)
    finally:
        users.stop()
    assert first.status_code == 201, first.text
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert reused.status_code == 422 and reused.json()["type"].endswith("/idempotency-key-reused"), reused.text
    assert IdempotencyKey.objects.filter(key__startswith=f"users.follow:{alice.id}:").count() == 1
    assert list(Follow.objects.values_list("followee__username", flat=True)) == ["bob"]
