"""shared.http against a real HTTP/1.1 server on 127.0.0.1.

The server is stdlib ``ThreadingHTTPServer`` with scripted replies per path, so
retries, timeouts and the breaker are exercised over real sockets. Time that the
assertions depend on (backoff, deadline, breaker reset) is injected; the only
real waits are the few sub-second read timeouts.
"""

from __future__ import annotations

import json
import pickle
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from shared.http import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceeded,
    DownstreamError,
    DownstreamHTTPError,
    DownstreamUnavailable,
    ServiceClient,
)

pytestmark = pytest.mark.timeout(15)


# ----------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    delay: float = 0.0
    raw: bytes | None = None  # sent as is instead of the JSON-encoded body


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with query string
    headers: dict[str, str]
    body: bytes
    client_port: int


class ScriptedServer:
    """Answers each path from a script; the last reply repeats. Records every request."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self.seen: list[Seen] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.httpd.daemon_threads = True
        # A handler thread may still be sleeping on a slow reply at teardown.
        self.httpd.block_on_close = False
        self.httpd.handle_error = lambda request, client_address: None  # client hung up
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path] = list(replies)
            self._served[path] = 0

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.split("?")[0] == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next_reply(self, seen: Seen) -> Reply:
        path = seen.path.split("?")[0]
        with self._lock:
            self.seen.append(seen)
            replies = self._scripts.get(path)
            if not replies:
                return Reply(404, {"detail": f"{path} is not scripted"})
            served = self._served[path]
            self._served[path] = served + 1
            return replies[min(served, len(replies) - 1)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5  # idle keep-alive connections do not hold a thread forever

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = server._next_reply(
                    Seen(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        self.client_address[1],
                    )
                )
                if reply.delay:
                    threading.Event().wait(reply.delay)
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.body is None:
                    payload = b""
                else:
                    payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingRandom:
    """uniform(a, b) returns the midpoint and remembers its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + (b - a) * 0.5


class UpperBound:
    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(server: ScriptedServer, sleeps: list[float]) -> Iterator[Callable[..., ServiceClient]]:
    clients: list[ServiceClient] = []

    def make(**kw: Any) -> ServiceClient:
        kw.setdefault("service_name", "feed")
        kw.setdefault("target", "users")
        kw.setdefault("sleep", sleeps.append)
        kw.setdefault("random", RecordingRandom())
        client = ServiceClient(kw.pop("base_url", server.url), **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:  # before the server closes: no idle handler threads left
        client.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -------------------------------------------------------------------------- success


def test_get_json_returns_decoded_body_and_sends_params(server, make_client):
    server.script("/internal/users/7", Reply(200, {"id": 7, "username": "ada"}))
    client = make_client()

    assert client.get_json("/internal/users/7", params={"fields": "username"}) == {
        "id": 7,
        "username": "ada",
    }
    assert [(s.method, s.path) for s in server.seen] == [("GET", "/internal/users/7?fields=username")]
    assert server.seen[0].headers["user-agent"] == "feed (shared.http)"


def test_post_json_sends_json_body(server, make_client):
    server.script("/internal/follows", Reply(201, {"created": True}))
    client = make_client()

    assert client.post_json("/internal/follows", {"follower": 1, "followee": 2}) == {"created": True}
    assert json.loads(server.seen[0].body) == {"follower": 1, "followee": 2}
    assert server.seen[0].headers["content-type"] == "application/json"


def test_empty_body_decodes_to_none(server, make_client):
    server.script("/internal/ping", Reply(204, None))
    assert make_client().get_json("/internal/ping") is None


def test_invalid_json_raises_downstream_error(server, make_client):
    server.script("/internal/html", Reply(200, raw=b"<html>oops</html>"))

    with pytest.raises(DownstreamError) as info:
        make_client().get_json("/internal/html")

    assert type(info.value) is DownstreamError
    assert info.value.detail == "invalid JSON in response to /internal/html"


def test_one_pooled_connection_is_reused(server, make_client):
    server.script("/internal/a", Reply(200, {}))
    client = make_client()
    client.get_json("/internal/a")
    client.get_json("/internal/a")

    assert server.count("/internal/a") == 2
    assert server.seen[0].client_port == server.seen[1].client_port


# -------------------------------------------------------------------------- retries


def test_get_retried_on_503_until_success(server, make_client, sleeps):
    server.script("/internal/flaky", Reply(503), Reply(503), Reply(200, {"n": 1}))
    client = make_client(max_retries=2)

    assert client.get_json("/internal/flaky") == {"n": 1}
    assert server.count("/internal/flaky") == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(("status", "attempts"), [(502, 3), (503, 3), (504, 3), (500, 1)])
def test_get_retries_only_gateway_statuses(server, make_client, status, attempts):
    server.script("/internal/down", Reply(status, {"detail": "down"}))
    client = make_client(max_retries=2)

    with pytest.raises(DownstreamUnavailable) as info:
        client.get_json("/internal/down")

    assert type(info.value) is DownstreamUnavailable
    assert info.value.status == status
    assert info.value.service == "users"
    assert server.count("/internal/down") == attempts


@pytest.mark.parametrize(
    ("method", "attempts"),
    [
        ("GET", 2),
        ("HEAD", 2),
        ("PUT", 2),
        ("DELETE", 2),
        ("OPTIONS", 2),
        ("POST", 1),
        ("PATCH", 1),
    ],
)
def test_only_idempotent_methods_retried_on_503(server, make_client, sleeps, method, attempts):
    server.script("/internal/x", Reply(503))
    client = make_client(max_retries=1)

    with pytest.raises(DownstreamUnavailable) as info:
        client.request(method, "/internal/x")

    assert info.value.status == 503
    assert server.count("/internal/x") == attempts
    assert len(sleeps) == attempts - 1


def test_post_not_retried_on_503(server, make_client, sleeps):
    server.script("/internal/posts", Reply(503), Reply(201, {"id": 1}))
    client = make_client(max_retries=2)

    with pytest.raises(DownstreamUnavailable) as info:
        client.post_json("/internal/posts", {"body": "hi"})

    assert info.value.status == 503
    assert server.count("/internal/posts") == 1
    assert sleeps == []


def test_post_marked_idempotent_is_retried(server, make_client):
    server.script("/internal/posts", Reply(503), Reply(201, {"id": 1}))
    client = make_client(max_retries=2)

    response = client.request(
        "POST",
        "/internal/posts",
        json={"body": "hi"},
        idempotent=True,
        headers={"Idempotency-Key": "k1"},
    )

    assert response.json() == {"id": 1}
    assert server.count("/internal/posts") == 2
    assert [s.headers["idempotency-key"] for s in server.seen] == ["k1", "k1"]


def test_post_retried_when_connection_refused(sleeps):
    port = closed_port()
    started: list[ScriptedServer] = []

    def sleep_then_start_server(delay: float) -> None:
        sleeps.append(delay)
        srv = ScriptedServer(port)
        srv.script("/internal/follows", Reply(201, {"created": True}))
        started.append(srv)

    client = ServiceClient(
        f"http://127.0.0.1:{port}",
        service_name="feed",
        target="users",
        sleep=sleep_then_start_server,
        random=RecordingRandom(),
    )
    try:
        assert client.post_json("/internal/follows", {"followee": 2}) == {"created": True}
    finally:
        client.close()
        for srv in started:
            srv.close()

    assert len(sleeps) == 1
    assert started[0].count("/internal/follows") == 1  # refused attempt never arrived


def test_connection_refused_exhausts_retries(sleeps):
    client = ServiceClient(
        f"http://127.0.0.1:{closed_port()}",
        service_name="feed",
        target="users",
        max_retries=2,
        sleep=sleeps.append,
        random=RecordingRandom(),
    )
    with client, pytest.raises(DownstreamUnavailable) as info:
        client.post_json("/internal/follows", {"followee": 2})

    assert type(info.value) is DownstreamUnavailable
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.status is None
    assert "after 3 attempts" in info.value.detail
    assert len(sleeps) == 2


def test_requests_take_the_listed_replicas_in_turn(server, make_client):
    other = ScriptedServer()
    try:
        for srv in (server, other):
            srv.script("/internal/users", Reply(200, {"ok": True}))
        client = make_client(base_url=f"{server.url}, {other.url}/")
        for _ in range(4):
            assert client.get_json("/internal/users") == {"ok": True}
        assert (server.count("/internal/users"), other.count("/internal/users")) == (2, 2)
    finally:
        other.close()


def test_a_replica_refusing_connections_costs_a_retry_on_the_next_one(server, make_client, sleeps):
    """A POST is safe to send again when the first replica never accepted the connection."""
    server.script("/internal/follows", Reply(201, {"created": True}))
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()},{server.url}")
    for _ in range(2):  # whichever replica the turn starts at, both calls succeed
        assert client.post_json("/internal/follows", {"followee": 2}) == {"created": True}
    assert server.count("/internal/follows") == 2
    assert sleeps == [0.0]  # one refused attempt, retried at once on the other replica


def test_base_url_must_name_a_url():
    with pytest.raises(ValueError, match="names no URL"):
        ServiceClient(" , ", service_name="feed", target="users")


def test_backoff_is_capped_exponential_with_full_jitter(server, make_client, sleeps):
    server.script("/internal/down", Reply(503))
    rng = RecordingRandom()
    client = make_client(max_retries=3, backoff_base=0.25, backoff_cap=0.6, random=rng)

    with pytest.raises(DownstreamUnavailable):
        client.get_json("/internal/down")

    assert rng.calls == [(0, 0.25), (0, 0.5), (0, 0.6)]
    assert sleeps == [0.125, 0.25, 0.3]
    assert server.count("/internal/down") == 4


# ------------------------------------------------------------- timeouts and deadline


def test_deadline_stops_retries(server, make_client):
    server.script("/internal/down", Reply(503))
    clock = FakeClock()
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        clock.advance(delay)

    client = make_client(
        deadline=1.0,
        max_retries=10,
        backoff_base=0.2,
        backoff_cap=10.0,
        random=UpperBound(),
        sleep=sleep,
        clock=clock,
    )
    with pytest.raises(DeadlineExceeded) as info:
        client.get_json("/internal/down")

    # Attempts at t=0, 0.2 and 0.6; the next backoff (0.8) would end after the
    # deadline at t=1.0, so it is not slept and no fourth attempt is made.
    assert slept == [0.2, 0.4]
    assert server.count("/internal/down") == 3
    assert info.value.status == 503
    assert isinstance(info.value, DownstreamUnavailable)


def test_no_attempt_starts_after_the_deadline(server, make_client):
    server.script("/internal/down", Reply(503))
    clock = FakeClock()

    def oversleep(delay: float) -> None:
        clock.advance(5.0)  # the thread was descheduled far past the deadline

    client = make_client(deadline=1.0, max_retries=10, sleep=oversleep, clock=clock)
    with pytest.raises(DeadlineExceeded):
        client.get_json("/internal/down")

    assert server.count("/internal/down") == 1


def test_attempt_timeout_is_capped_by_time_left(server, make_client):
    # The reply would arrive well within read_timeout, but not within the deadline.
    server.script("/internal/slow", Reply(200, {"late": True}, delay=1.0))
    client = make_client(read_timeout=5.0, deadline=0.3)

    with pytest.raises(DeadlineExceeded) as info:
        client.get_json("/internal/slow")

    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert server.count("/internal/slow") == 1


def test_get_retried_on_read_timeout(server, make_client, sleeps):
    server.script("/internal/slow", Reply(200, {}, delay=0.6))
    client = make_client(read_timeout=0.2, deadline=3.0, max_retries=1)

    with pytest.raises(DownstreamUnavailable) as info:
        client.get_json("/internal/slow")

    assert type(info.value) is DownstreamUnavailable
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert server.count("/internal/slow") == 2
    assert len(sleeps) == 1


def test_post_not_retried_on_read_timeout(server, make_client, sleeps):
    server.script("/internal/posts", Reply(201, {}, delay=0.6))
    client = make_client(read_timeout=0.2, deadline=3.0, max_retries=2)

    with pytest.raises(DownstreamUnavailable) as info:
        client.post_json("/internal/posts", {"body": "hi"})

    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert server.count("/internal/posts") == 1
    assert sleeps == []


# --------------------------------------------------------------------- client errors


def test_4xx_raises_http_error_without_retry(server, make_client, sleeps):
    server.script("/internal/users/9", Reply(404, {"detail": "no such user"}))
    client = make_client(max_retries=2)

    with pytest.raises(DownstreamHTTPError) as info:
        client.get_json("/internal/users/9")

    assert not isinstance(info.value, DownstreamUnavailable)
    assert info.value.status == 404
    assert info.value.body == {"detail": "no such user"}
    assert info.value.service == "users"
    assert server.count("/internal/users/9") == 1
    assert sleeps == []
    assert client.breaker.failures == 0  # the downstream answered: not a failure


def test_errors_survive_pickling():
    # Celery stores task exceptions; they must round-trip.
    for exc in (
        DownstreamHTTPError("users", 409, {"detail": "taken"}, "conflict"),
        DownstreamUnavailable("users", "HTTP 503", 503),
        DeadlineExceeded("users", "late", None),
        CircuitOpenError("users", "open"),
        DownstreamError("users", "bad JSON"),
    ):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc)
        assert copy.__dict__ == exc.__dict__
        assert str(copy) == str(exc)


# ------------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_threshold_and_fails_fast(server, make_client):
    server.script("/internal/down", Reply(502))
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10.0, clock=clock)
    client = make_client(max_retries=0, breaker=breaker)

    for _ in range(3):
        with pytest.raises(DownstreamUnavailable) as info:
            client.get_json("/internal/down")
        assert type(info.value) is DownstreamUnavailable
    assert breaker.state == "open"

    with pytest.raises(CircuitOpenError):
        client.get_json("/internal/down")
    assert server.count("/internal/down") == 3

    clock.advance(9.99)
    with pytest.raises(CircuitOpenError):
        client.get_json("/internal/down")
    assert server.count("/internal/down") == 3


def test_half_open_trial_success_closes_breaker(server, make_client):
    server.script("/internal/down", Reply(502))
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10.0, clock=clock)
    client = make_client(max_retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(DownstreamUnavailable):
            client.get_json("/internal/down")
    assert breaker.state == "open"

    server.script("/internal/down", Reply(200, {"back": True}))
    clock.advance(10.0)
    assert breaker.state == "half_open"

    assert client.get_json("/internal/down") == {"back": True}
    assert breaker.state == "closed"
    assert client.get_json("/internal/down") == {"back": True}
    assert server.count("/internal/down") == 4


def test_half_open_trial_failure_reopens_breaker(server, make_client):
    server.script("/internal/down", Reply(503))
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10.0, clock=clock)
    client = make_client(max_retries=3, breaker=breaker)

    # Retries stop as soon as the breaker opens mid-call.
    with pytest.raises(CircuitOpenError):
        client.get_json("/internal/down")
    assert server.count("/internal/down") == 2

    clock.advance(10.0)
    with pytest.raises(CircuitOpenError):  # trial fails, breaker reopens, retry refused
        client.get_json("/internal/down")
    assert server.count("/internal/down") == 3
    assert breaker.state == "open"


def test_breaker_counts_connect_errors():
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    client = ServiceClient(
        f"http://127.0.0.1:{closed_port()}",
        service_name="feed",
        target="users",
        max_retries=5,
        breaker=breaker,
        sleep=lambda delay: None,
    )
    with client, pytest.raises(CircuitOpenError) as info:
        client.get_json("/internal/x")

    assert isinstance(info.value.__cause__, DownstreamUnavailable)
    assert breaker.state == "open"


def test_half_open_admits_exactly_one_trial_across_threads():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    barrier = threading.Barrier(32)
    admitted: list[bool] = []

    def ask() -> None:
        barrier.wait()
        admitted.append(breaker.allow_request())

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert admitted.count(True) == 1
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow_request() is True


def test_breaker_release_frees_the_trial_slot():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1.0, clock=clock)
    breaker.record_failure()
    clock.advance(1.0)

    assert breaker.allow_request() is True
    assert breaker.allow_request() is False
    breaker.release()
    assert breaker.state == "half_open"
    assert breaker.allow_request() is True


def test_success_resets_consecutive_failures():
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state == "closed"
    assert breaker.failures == 2


# --------------------------------------------------------- request id and credential


def fake_requestid_module(value: str | None) -> types.ModuleType:
    module = types.ModuleType("shared.requestid")
    module.get_request_id = lambda: value  # type: ignore[attr-defined]
    return module


def test_request_id_propagated(server, make_client, monkeypatch):
    monkeypatch.setitem(sys.modules, "shared.requestid", fake_requestid_module("req-42"))
    server.script("/internal/flaky", Reply(503), Reply(200, {}))

    make_client().get_json("/internal/flaky")

    assert [s.headers.get("x-request-id") for s in server.seen] == ["req-42", "req-42"]


def test_no_request_id_header_without_one(server, make_client, monkeypatch):
    monkeypatch.setitem(sys.modules, "shared.requestid", fake_requestid_module(None))
    server.script("/internal/a", Reply(200, {}))

    make_client().get_json("/internal/a")

    assert "x-request-id" not in server.seen[0].headers


def test_works_without_requestid_module(server, make_client, monkeypatch):
    monkeypatch.setitem(sys.modules, "shared.requestid", None)  # import raises ImportError
    server.script("/internal/a", Reply(200, {"ok": 1}))

    assert make_client().get_json("/internal/a") == {"ok": 1}
    assert "x-request-id" not in server.seen[0].headers


def test_credential_sent_and_fetched_per_attempt(server, make_client):
    issued: list[str] = []

    def credential() -> str:
        issued.append(f"tok-{len(issued) + 1}")
        return issued[-1]

    server.script("/internal/flaky", Reply(503), Reply(200, {}))
    make_client(credential=credential).get_json("/internal/flaky")

    assert [s.headers["authorization"] for s in server.seen] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


def test_no_authorization_header_without_credential(server, make_client):
    server.script("/internal/a", Reply(200, {}))
    make_client().get_json("/internal/a")
    assert "authorization" not in server.seen[0].headers


# ------------------------------------------------------------------------- metrics


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_metrics_count_outcomes_and_retries(server, make_client):
    target = "users-metrics-test"
    server.script("/internal/flaky", Reply(503), Reply(200, {}))
    server.script("/internal/missing", Reply(404, {}))
    client = make_client(target=target)

    client.get_json("/internal/flaky")
    with pytest.raises(DownstreamHTTPError):
        client.get_json("/internal/missing")

    def requests(outcome: str) -> float | None:
        return sample("downstream_requests_total", service="feed", target=target, outcome=outcome)

    assert requests("success") == 1.0
    assert requests("retry") == 1.0
    assert requests("client_error") == 1.0
    assert requests("unavailable") is None
    assert sample("downstream_request_seconds_count", target=target) == 2.0
