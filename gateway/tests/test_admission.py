"""Concurrency limit per replica and the service queue (max_outstanding, queue_timeout, max_queue)
against real replicas: waiting requests go to the first free replica, in order, and a request
that cannot be placed gets a 503 problem+json instead of piling onto a busy replica."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import pytest

from gateway import config

from .conftest import Gateway, Upstream, eventually, free_port, problem

pytestmark = pytest.mark.timeout(90)

ROUTES = """
upstreams:
  svc: {{replicas: [{replicas}]{extra}}}
routes:
  - {{prefix: /a, service: svc, auth: none, ratelimit: off}}
"""


def _setup(tmp_path, procs, n, extra="", **env):
    ups = [Upstream(f"r{i}", free_port()).start() for i in range(1, n + 1)]
    procs.extend(ups)
    routes = ROUTES.format(replicas=", ".join(repr(u.addr) for u in ups), extra=extra)
    g = Gateway(tmp_path, env, routes).start()
    procs.append(g)
    return g, ups


def _occupy(g: Gateway, ups: list[Upstream], paths: list[str]) -> list[threading.Thread]:
    """Slow requests in the background, returned once the replicas are working on all of them."""
    threads = [threading.Thread(target=g.request, args=("GET", p), kwargs={"timeout": 30}) for p in paths]
    for t in threads:
        t.start()
    eventually(lambda: sum(u.stats()["inflight"] for u in ups) == len(paths), 5, "replicas busy")
    return threads


def _concurrently(g: Gateway, paths: list[str]) -> list:
    results: list = [None] * len(paths)
    barrier = threading.Barrier(len(paths))

    def run(i):
        barrier.wait()
        results[i] = g.request("GET", paths[i], timeout=30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_requests_beyond_the_limit_wait_for_a_free_replica(tmp_path, procs):
    g, ups = _setup(tmp_path, procs, 2, extra=", max_outstanding: 1")
    results = _concurrently(g, [f"/a/{i}?sleep=1" for i in range(6)])
    assert [r.status for r in results] == [200] * 6
    assert sorted(r.upstream for r in results) == ["r1", "r1", "r1", "r2", "r2", "r2"]
    # each replica answered one request at a time; the other four waited in the gateway
    assert [u.stats()["peak"] for u in ups] == [1, 1]
    assert g.metric("gateway_upstream_queued_total", service="svc") >= 4
    eventually(lambda: g.metric("gateway_upstream_queue_depth", service="svc") == 0, 5, "queue empty")


def test_no_limit_by_default_sends_everything_at_once(tmp_path, procs):
    g, ups = _setup(tmp_path, procs, 1)
    results = _concurrently(g, [f"/a/{i}?sleep=1" for i in range(4)])
    assert [r.status for r in results] == [200] * 4
    assert ups[0].stats()["peak"] == 4
    assert g.metric("gateway_upstream_queued_total", service="svc") == 0


def test_queue_timeout_is_503_and_the_request_never_reaches_a_replica(tmp_path, procs):
    g, ups = _setup(tmp_path, procs, 2, extra=", max_outstanding: 1, queue_timeout: 0.3")
    busy = _occupy(g, ups, ["/a/busy1?sleep=3", "/a/busy2?sleep=3"])
    r = g.request("GET", "/a/waits")
    assert r.status == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "1"
    assert r.json() == problem(
        503, "service-unavailable", "Service unavailable", "every replica of svc stayed busy for the queue timeout"
    )
    for t in busy:
        t.join()
    assert sum(u.stats()["served"] for u in ups) == 2  # the timed-out request was never sent
    assert g.metric("gateway_upstream_queue_rejections_total", service="svc", reason="timeout") == 1
    assert g.request("GET", "/a/after").status == 200


def test_full_queue_is_503_at_once(tmp_path, procs):
    g, ups = _setup(tmp_path, procs, 1, extra=", max_outstanding: 1, max_queue: 0")
    busy = _occupy(g, ups, ["/a/busy?sleep=2"])
    r = g.request("GET", "/a/refused")
    assert r.status == 503
    assert r.headers["retry-after"] == "1"
    assert "0 requests are already waiting" in r.json()["detail"]
    busy[0].join()
    assert g.metric("gateway_upstream_queue_rejections_total", service="svc", reason="full") == 1
    assert ups[0].stats()["served"] == 1


def test_a_waiting_client_that_hangs_up_is_dropped_from_the_queue(tmp_path, procs):
    g, ups = _setup(tmp_path, procs, 1, extra=", max_outstanding: 1")
    busy = _occupy(g, ups, ["/a/busy?sleep=1.5"])
    with socket.create_connection(("127.0.0.1", g.port)) as s:
        s.sendall(b"GET /a/gone HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-1\r\n\r\n")
        time.sleep(0.3)
    busy[0].join()
    assert g.request("GET", "/a/next").status == 200
    assert ups[0].stats()["served"] == 2  # busy and next; the abandoned request was not sent
    gone = [e for e in g.access_log() if e["request_id"] == "gone-1"]
    assert [e["status"] for e in gone] == [499]


def test_reload_raising_the_limit_serves_waiting_requests(tmp_path, procs):
    g, ups = _setup(tmp_path, procs, 1, extra=", max_outstanding: 1, queue_timeout: 20")
    done: dict[str, float] = {}

    def get(path):
        r = g.request("GET", path, timeout=30)
        assert r.status == 200
        done[path] = time.monotonic()

    first = threading.Thread(target=get, args=("/a/first?sleep=4",))
    first.start()
    eventually(lambda: ups[0].stats()["inflight"] == 1, 5, "first request upstream")
    second = threading.Thread(target=get, args=("/a/second",))
    second.start()
    eventually(lambda: g.metric("gateway_upstream_queue_depth", service="svc") == 1, 5, "one request queued")
    g.routes_file.write_text(g.routes_file.read_text().replace("max_outstanding: 1", "max_outstanding: 2"))
    g.signal(signal.SIGHUP)
    second.join()
    first.join()
    assert done["/a/second"] < done["/a/first?sleep=4"]  # it did not wait for the slow one
    assert ups[0].stats()["peak"] == 2


def test_limits_come_from_defaults_environment_and_each_upstream(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("""
upstreams:
  a: {replicas: ["127.0.0.1:1"], max_outstanding: 3}
  b: {replicas: ["127.0.0.1:2"], queue_timeout: 0.5}
defaults: {max_outstanding: 8, max_queue: 50}
routes:
  - {prefix: /a, service: a}
""")
    s = config.load({"GATEWAY_ROUTES": str(routes)})
    assert s.limits["a"] == config.Limits(max_outstanding=3, queue_timeout=5.0, max_queue=50)
    assert s.limits["b"] == config.Limits(max_outstanding=8, queue_timeout=0.5, max_queue=50)
    # the environment replaces the file's defaults; a value set on an upstream still wins
    s = config.load(
        {
            "GATEWAY_ROUTES": str(routes),
            "GATEWAY_MAX_OUTSTANDING": "0",
            "GATEWAY_MAX_QUEUE": "7",
            "GATEWAY_UPSTREAMS": "c=127.0.0.1:3",
        }
    )
    assert s.limits["a"].max_outstanding == 3
    assert s.limits["b"] == config.Limits(max_outstanding=0, queue_timeout=0.5, max_queue=7)
    assert s.limits["c"] == config.Limits(max_outstanding=0, queue_timeout=5.0, max_queue=7)


@pytest.mark.parametrize(
    "spec, env, message",
    [
        ("{replicas: [], max_outstanding: -1}", {}, "upstreams.a: max_outstanding and max_queue must be >= 0"),
        ("{replicas: [], queue_timeout: 0}", {}, "upstreams.a: max_outstanding and max_queue must be >= 0, queue_timeout > 0"),
        ("{replicas: [], max_queue: lots}", {}, "upstreams.a: max_outstanding and max_queue must be integers"),
        ("{replicas: []}", {"GATEWAY_MAX_OUTSTANDING": "x"}, "GATEWAY_MAX_OUTSTANDING must be an integer"),
        ("{replicas: []}", {"GATEWAY_QUEUE_TIMEOUT": "-1"}, "queue_timeout > 0"),
    ],
)
def test_bad_limits_are_rejected_with_a_clear_message(tmp_path, spec, env, message):
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"upstreams:\n  a: {spec}\nroutes:\n  - {{prefix: /a, service: a}}\n")
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load({"GATEWAY_ROUTES": str(routes), **env})
