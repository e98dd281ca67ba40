"""One log schema for every process (docs/operations.md#logs), read from the real processes' output.

Every JSON line of every process kind (gateway: its log and its access log; a service's gunicorn
replicas, Celery worker, outbox relay, beat) has the same fields: ts (ISO 8601, UTC), level,
logger, service, pid, request_id, msg. Lines written inside a span carry its trace_id and
span_id (tracing is on in the system tests, tests/conftest.py): the gateway's access line of a
request and the worker's line about the event that request caused share the request's trace id.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime

import httpx
from harness import wait_until

SCHEMA = ("ts", "level", "logger", "service", "pid", "request_id", "msg")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
HEX = {"trace_id": re.compile(r"^[0-9a-f]{32}$"), "span_id": re.compile(r"^[0-9a-f]{16}$")}
KINDS = (
    "gateway",
    "users-0",
    "feed-0",
    "notifications-0",
    "users-worker",
    "feed-worker",
    "notifications-worker",
    "users-relay",
    "feed-relay",
    "notifications-relay",
)
QUIET = ("users-beat", "feed-beat", "notifications-beat")  # log warnings only: checked when they wrote any


def json_lines(system, name: str) -> list[dict]:
    text = (system.ctx.run_dir / f"{name}.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def check_schema(name: str, line: dict) -> None:
    missing = [key for key in SCHEMA if key not in line]
    assert not missing, f"{name}: {missing} missing in {line}"
    assert ISO.match(line["ts"]), f"{name}: ts {line['ts']!r} is not ISO 8601 UTC with ms"
    datetime.fromisoformat(line["ts"])
    assert line["level"] in ("debug", "info", "warning", "error", "critical"), line
    assert isinstance(line["pid"], int) and isinstance(line["msg"], str), line
    assert line["service"] == name.split("-")[0], line
    for key, pattern in HEX.items():
        if key in line:
            assert pattern.match(line[key]), f"{name}: {key} {line[key]!r}"
    assert ("trace_id" in line) == ("span_id" in line), line


def test_every_process_kind_writes_the_same_schema_with_trace_ids(system):
    name = f"logs_{uuid.uuid4().hex[:8]}"
    rid = f"log-schema-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=system.gateway_url + "/api/v1", timeout=10) as api:
        response = api.post(
            "/auth/register",
            headers={"X-Request-ID": rid},
            json={"username": name, "email": f"{name}@example.com", "password": "correct horse battery"},
        )
        assert response.status_code == 201, response.text
        token = response.json()["access"]
        # a post: a request through the gateway to feed, and an event to the workers
        post = api.post(
            "/posts", headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid + "-post"}, json={"body": "logs"}
        )
        assert post.status_code == 201, post.text

    access = wait_until(
        lambda: [
            line
            for line in json_lines(system, "gateway")
            if line.get("request_id") == rid + "-post" and line.get("logger") == "gateway.access"
        ],
        timeout=10,
        what="the gateway's access line",
    )
    assert access[0]["trace_id"] and access[0]["span_id"]
    # the post's event, applied by notifications' worker, is logged in the request's trace
    applied = wait_until(
        lambda: [
            line
            for line in json_lines(system, "notifications-worker")
            if line.get("request_id") == rid + "-post" and line["msg"].startswith("event ")
        ],
        timeout=30,
        what="the worker's line for the post's event",
    )
    assert applied[0]["trace_id"] == access[0]["trace_id"], (applied[0], access[0])
    assert applied[0]["span_id"] != access[0]["span_id"]

    for kind in KINDS + QUIET:
        lines = json_lines(system, kind)
        assert lines or kind in QUIET, f"{kind} wrote no JSON log line"
        for line in lines:
            check_schema(kind, line)
