"""The shared platform as the users service runs it: health, metrics, request ids, slow logs, errors."""

import logging

import pytest
from rest_framework.test import APIClient

from shared import health
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_live_and_ready(api_client):
    assert api_client.get("/health/live").json()["status"] == "ok"
    ready = api_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_ready_fails_while_draining(api_client):
    health.start_draining()
    try:
        response = api_client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["draining"] == "shutting down"
        assert api_client.get("/health/live").status_code == 200
    finally:
        health._draining.clear()


def test_ready_reports_redis_down_but_stays_ready(api_client, settings):
    """Redis is shared by every replica and the service degrades without it: failing readiness
    would take every replica out of rotation at once."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = api_client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["redis"].startswith("ConnectionError")


def test_metrics_by_route_template(alice, client_for, api_client):
    client_for(alice).get("/api/v1/users/alice")
    text = api_client.get("/metrics").content.decode()
    assert 'http_requests_total{method="GET",route="api/v1/users/<str:username>",status="200"}' in text
    assert "http_request_db_queries_bucket" in text


def test_request_id_echoed_or_replaced(api_client):
    assert api_client.get("/health/live", HTTP_X_REQUEST_ID="abc-123.X_y")["X-Request-ID"] == "abc-123.X_y"
    replaced = api_client.get("/health/live", HTTP_X_REQUEST_ID="bad id\n<script>")["X-Request-ID"]
    assert len(replaced) == 32 and replaced.isalnum()


def test_slow_request_and_query_logged_with_request_id(alice, client_for, settings, caplog):
    settings.SLOW_REQUEST_MS = 0
    settings.SLOW_QUERY_MS = 0
    with caplog.at_level(logging.WARNING, logger="shared.slow"):
        client_for(alice).get("/api/v1/users/me", HTTP_X_REQUEST_ID="req-42")
    messages = {r.getMessage(): r for r in caplog.records}
    assert messages["slow request"].route == "api/v1/users/me"
    assert messages["slow request"].db_queries == 1
    assert messages["slow query"].sql.startswith("SELECT")
    # the JSON formatter puts the request id on every line
    from shared.jsonlog import JsonFormatter
    from shared.requestid import RequestIdFilter, set_request_id

    token = set_request_id("req-42")
    record = messages["slow query"]
    RequestIdFilter().filter(record)
    assert '"request_id": "req-42"' in JsonFormatter("users").format(record)
    from shared.requestid import reset_request_id

    reset_request_id(token)


@pytest.mark.urls("tests.error_urls")
def test_unhandled_error_is_problem_json_without_traceback():
    client = APIClient(raise_request_exception=False)
    response = client.get("/boom", HTTP_X_REQUEST_ID="req-boom")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body == {
        "type": "https://docs.social.example/problems/internal-error",
        "title": "Internal server error",
        "status": 500,
        "detail": "The server failed to handle this request; it has been logged.",
        "request_id": "req-boom",
    }


def test_openapi_schema(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "/api/v1/auth/register" in response.content.decode()


def test_with_redis_away_logins_profiles_and_follows_are_served_from_postgres(alice, bob, client_for, settings):
    """The cache (profiles, throttle history) fails open: a miss on read, skipped on write."""
    dead = "redis://127.0.0.1:1/0"
    settings.REDIS_URL = dead
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login_ip": "1/min", "login_account": "1/min"}
    for _ in range(3):  # throttles fail open: no history to count against
        login = APIClient().post("/api/v1/auth/login", {"username": "alice", "password": PASSWORD}, format="json")
        assert login.status_code == 200, login.content
    profile = client_for(bob).get("/api/v1/users/alice")
    assert profile.status_code == 200 and profile.json()["username"] == "alice"
    updated = client_for(alice).patch("/api/v1/users/me", {"bio": "offline"}, format="json")
    assert updated.status_code == 200, updated.content
    assert client_for(bob).get("/api/v1/users/alice").json()["bio"] == "offline"
    assert client_for(bob).post("/api/v1/users/alice/follow").status_code == 201
    assert client_for(bob).get("/api/v1/users/alice").json()["followers_count"] == 1


def test_a_gunicorn_worker_freezes_what_is_alive_once_every_view_is_imported(monkeypatch):
    """shared.gunicorn_conf.post_worker_init: every view module imported (Django would import the
    URLconf's includes at the first request), then everything alive moved out of the collector's
    reach (gc.freeze), so a full collection never walks the application; GC_FREEZE=0 leaves it."""
    import gc
    import sys

    from shared import gunicorn_conf

    assert gc.get_freeze_count() == 0
    monkeypatch.setenv("GC_FREEZE", "0")
    gunicorn_conf.freeze_startup_objects()
    assert gc.get_freeze_count() == 0
    monkeypatch.delenv("GC_FREEZE")
    try:
        gunicorn_conf.freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000
        assert {"follows.urls", "accounts.internal_urls", "follows.api"} <= set(sys.modules)
    finally:
        gc.unfreeze()
