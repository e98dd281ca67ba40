"""Load balancing over real replicas: spread, retries, outlier ejection and return, timeouts."""

from __future__ import annotations

import collections
import contextlib
import http.client
import socket
import struct
import threading
import time
import uuid

import pytest

from .conftest import Gateway, Upstream, eventually, free_port, problem

pytestmark = pytest.mark.timeout(90)

ROUTES = """
upstreams:
  svc: {replicas: []}
routes:
  - {prefix: /a, service: svc, auth: none, ratelimit: off}
  - {prefix: /slow, service: svc, auth: none, timeout: 0.5, ratelimit: off}
"""


def _gateway(tmp_path, procs, ups, **env):
    g = Gateway(tmp_path, {"GATEWAY_UPSTREAMS": "svc=" + ",".join(u.addr for u in ups), **env}, ROUTES).start()
    procs.append(g)
    # the gateway checks every replica once as it starts: a replica that a test kills or breaks
    # while that check is in flight would be taken out of rotation by it, not by what the test does
    for u in ups:
        if u.proc is not None and u.proc.poll() is None:
            eventually(lambda u=u: u.stats()["health"] >= 1, 10, f"the start-up health check of {u.name}")
    return g


def _replicas(n, procs):
    ups = [Upstream(f"r{i}", free_port()).start() for i in range(1, n + 1)]
    procs.extend(ups)
    return ups


class Load:
    """Threads sending keep-alive GETs in a loop; records every outcome."""

    def __init__(self, port: int, path: str = "/a/x", threads: int = 4):
        self.port, self.path = port, path
        self.results: list[tuple[float, object, str | None]] = []
        self.answered: dict[str, int] = {}  # request id -> status the client received
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        conn = None
        while not self.stop_flag.is_set():
            rid = uuid.uuid4().hex
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", self.path, headers={"X-Request-ID": rid})
                resp = conn.getresponse()
                resp.read()
                self.results.append((time.monotonic(), resp.status, resp.getheader("X-Upstream")))
                self.answered[rid] = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((time.monotonic(), repr(exc), None))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)

    def failures(self):
        return [r for r in self.results if r[1] != 200]


def test_requests_spread_over_replicas(tmp_path, procs):
    ups = _replicas(3, procs)
    g = _gateway(tmp_path, procs, ups)
    served = collections.Counter(g.request("GET", "/a/x").upstream for _ in range(60))
    assert set(served) == {"r1", "r2", "r3"}


@pytest.mark.parametrize("limit", ["0", "2"], ids=["no-limit", "max-outstanding-2"])
def test_zero_failed_gets_while_a_replica_is_killed_under_load(tmp_path, procs, limit):
    # with a limit of 2 per replica, 6 clients keep requests waiting in the gateway's queue too
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="0.5", GATEWAY_MAX_OUTSTANDING=limit)
    with Load(g.port, threads=6) as load:
        time.sleep(1.0)
        killed_at = time.monotonic()
        ups[1].kill()  # SIGKILL: in-flight requests and pooled connections die with it
        time.sleep(1.5)
    assert load.failures() == []
    before = [r for r in load.results if r[0] < killed_at]
    after = [r for r in load.results if r[0] > killed_at + 0.5]
    assert {r[2] for r in before} == {"r1", "r2"}
    assert len(after) > 20 and {r[2] for r in after} == {"r1"}


class ResettingReplica:
    """A replica that answers the gateway's start-up health check, then resets every connection
    as soon as it accepts it: a replica that dies with connections in its accept queue."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(64)
        host, port = self.sock.getsockname()
        self.addr = f"{host}:{port}"
        self.proc = None  # not a process: _gateway waits for no health check of it
        self.resets = 0
        self.checked = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()
            self.checked.set()
            while True:
                conn, _ = self.sock.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST
                self.resets += 1

    def kill(self):
        self.sock.close()


def test_connection_reset_right_after_connect_is_retried(tmp_path, procs):
    """A connection that is reset between the connect and the request being sent (the loop may
    see the reset before the request goes out) is a failed connect, retried on another replica;
    it once left the request unanswered until the client gave up."""
    ups = _replicas(1, procs)
    bad = ResettingReplica()
    procs.append(bad)
    g = _gateway(
        tmp_path,
        procs,
        [ups[0], bad],
        GATEWAY_HEALTH_INTERVAL="60",  # r2 stays in rotation: only its connections fail
        GATEWAY_EJECT_AFTER="100000",
        GATEWAY_RETRY_BUDGET="1",
        GATEWAY_RETRY_MIN="1000",
    )
    assert bad.checked.wait(10), "the start-up health check of r2"
    answers = [g.request("GET", "/a/x", timeout=5) for _ in range(200)]
    assert {(r.status, r.upstream) for r in answers} == {(200, "r1")}

    def retries():
        return sum(g.metric("gateway_upstream_retries_total", service="svc", reason=why) for why in ("connect", "reset"))

    assert bad.resets > 10
    eventually(lambda: retries() == bad.resets, 5, "one retry per reset connection")


def test_replica_dying_between_head_and_body_is_retried_without_a_broken_answer(tmp_path, procs):
    """The head of a response is held until its body starts: a replica that dies in between has
    sent the client nothing, so a GET is retried on another replica instead of cut short."""
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups)
    answers = []

    def retried() -> float:
        return g.metric("gateway_upstream_retries_total", service="svc", reason="reset")

    # stop at the first retry: a request sent after it could meet r2 before its exit is noticed
    while not retried() and len(answers) < 50:
        answers.append(g.request("GET", "/a/x?die_after_head=r2"))
    eventually(lambda: ups[1].proc.poll() is not None, 10, "r2 exited")  # it died after its head
    assert {(r.status, r.upstream) for r in answers} == {(200, "r1")}
    assert g.metric("gateway_upstream_retries_total", service="svc", reason="reset") == 1


def test_idempotent_requests_retried_on_503_but_posts_are_not(tmp_path, procs):
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, GATEWAY_EJECT_AFTER="1000")
    gets = [g.request("GET", "/a/x?status=503&only=r2") for _ in range(20)]
    assert [r.status for r in gets] == [200] * 20
    assert {r.upstream for r in gets} == {"r1"}
    retried = g.metric("gateway_upstream_retries_total", service="svc", reason="status_503")
    assert retried >= 1
    posts = collections.Counter(g.request("POST", "/a/x?status=503&only=r2", body=b"{}").status for _ in range(30))
    assert set(posts) == {200, 503}  # a POST that reached r2 is answered as r2 answered it
    assert g.metric("gateway_upstream_retries_total", service="svc", reason="status_503") == retried


def test_connect_failures_are_retried_for_any_method_and_502_when_all_fail(tmp_path, procs):
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="60")
    time.sleep(0.3)  # the start-up health check has passed; no further checks in this test
    ups[1].kill()  # still in rotation: only failed connects can tell
    answers = [g.request("POST", "/a/x", body=b"{}") for _ in range(10)]
    assert [r.status for r in answers] == [200] * 10, answers
    assert g.metric("gateway_upstream_retries_total", service="svc", reason="connect") >= 1
    ups[0].kill()
    r = g.request("GET", "/a/x")
    assert r.status == 502
    assert r.json() == problem(502, "bad-gateway", "Bad gateway", "could not connect to svc")


def test_replica_ejected_then_returns(tmp_path, procs):
    ups = _replicas(2, procs)
    # passive detection only (no active checks in the window): 3 consecutive failures eject for 2 s
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="60", GATEWAY_EJECT_AFTER="3", GATEWAY_EJECT_BASE="2")
    time.sleep(0.3)  # the start-up health check has passed
    ups[1].kill()
    statuses = [g.request("GET", "/a/x").status for _ in range(30)]
    assert statuses == [200] * 30
    assert g.metric("gateway_upstream_ejections_total", service="svc", replica=ups[1].addr) == 1
    assert g.metric("gateway_upstream_replica_up", service="svc", replica=ups[1].addr) == 0
    ups[1].start()  # same address comes back
    eventually(lambda: g.request("GET", "/a/x").upstream == "r2", 10, "ejected replica back in rotation", interval=0.05)
    assert g.metric("gateway_upstream_ejections_total", service="svc", replica=ups[1].addr) == 1
    assert g.metric("gateway_upstream_replica_up", service="svc", replica=ups[1].addr) == 1


def test_last_replica_is_never_ejected(tmp_path, procs):
    ups = _replicas(1, procs)
    g = _gateway(tmp_path, procs, ups, GATEWAY_EJECT_AFTER="2")
    statuses = [g.request("GET", "/a/x?status=500").status for _ in range(5)]
    assert statuses == [500] * 5  # upstream answers are passed through
    assert g.metric("gateway_upstream_ejections_total", service="svc") == 0
    assert g.request("GET", "/a/x").status == 200


def test_active_health_check_takes_replica_out_and_back(tmp_path, procs, keys):
    flag = str(keys.path)  # upstream answers /health/ready 503 while <file>.unready exists
    ups = [Upstream("r1", free_port()).start(), Upstream("r2", free_port(), flag).start()]
    procs.extend(ups)
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="0.3")
    marker = keys.path.with_name(keys.path.name + ".unready")
    marker.write_text("")
    try:
        eventually(lambda: {g.request("GET", "/a/x").upstream for _ in range(20)} == {"r1"}, 10, "r2 out of rotation")
    finally:
        marker.unlink()
    eventually(lambda: {g.request("GET", "/a/x").upstream for _ in range(30)} == {"r1", "r2"}, 10, "r2 back in rotation")


def test_route_timeout_is_504(tmp_path, procs):
    ups = _replicas(1, procs)
    g = _gateway(tmp_path, procs, ups)
    r = g.request("GET", "/slow?sleep=2")
    assert r.status == 504
    assert r.json() == problem(504, "gateway-timeout", "Gateway timeout", "svc did not answer within 0.5s")
    assert g.request("GET", "/a/x").status == 200


def test_pooled_connections_are_reused_then_closed_when_idle(tmp_path, procs):
    ups = _replicas(1, procs)
    g = _gateway(tmp_path, procs, ups, GATEWAY_UPSTREAM_IDLE_TIMEOUT="0.5")
    for _ in range(10):  # sequential: one pooled connection serves them all
        assert g.request("GET", "/a/x").status == 200
    assert g.metric("gateway_upstream_connections") == 1
    # idle longer than the timeout: closed by the gateway (before the server would)
    eventually(lambda: g.metric("gateway_upstream_connections") == 0, 10, "the idle pooled connection closed")
    assert g.request("GET", "/a/x").status == 200
