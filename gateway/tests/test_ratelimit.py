"""Rate limits: token buckets in a real Redis, shared by gateway processes, failing open."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from .conftest import ROOT, Gateway, Upstream, eventually, free_port, problem

sys.path.insert(0, str(ROOT / "dev"))
import infra

pytestmark = pytest.mark.timeout(90)

ROUTES = """
upstreams:
  svc: {replicas: []}
routes:
  - prefix: /ip
    service: svc
    auth: none
    ratelimit: {name: t-ip-%(n)s, ip: {rate: 0.5, burst: 3}}
  - prefix: /user
    service: svc
    auth: required
    ratelimit: {name: t-user-%(n)s, user: {rate: 0.5, burst: 2}}
  - {prefix: /free, service: svc, auth: none, ratelimit: off}
"""


@pytest.fixture
def upstream(procs, keys):
    u = Upstream("r1", free_port(), str(keys.path)).start()
    procs.append(u)
    return u


def _gateway(tmp_path, procs, upstream, redis_url, **env):
    n = free_port()  # fresh bucket names per test: the Redis is shared by the session
    g = Gateway(
        tmp_path,
        {
            "GATEWAY_UPSTREAMS": f"svc={upstream.addr}",
            "REDIS_URL": redis_url,
            "JWKS_URL": f"http://{upstream.addr}/.well-known/jwks.json",
            "GATEWAY_RATELIMIT_PREFIX": f"test:{n}:",
            **env,
        },
        ROUTES % {"n": n},
    ).start()
    procs.append(g)
    return g


def _wait_redis(g, workers=1):
    # the Redis connection is made asynchronously at start
    # (the revocation set's connection logs "redis connected: …(revocation checking)": not counted)
    eventually(lambda: len(re.findall(r"redis connected: [^\"(]*\"", g.log_text())) >= workers, 30, "Redis connected")


def test_ip_bucket_headers_and_429(tmp_path, procs, upstream, redis_url):
    g = _gateway(tmp_path, procs, upstream, redis_url)
    _wait_redis(g)
    seen = []
    for _ in range(3):
        r = g.request("GET", "/ip/x")
        assert r.status == 200
        seen.append((r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]))
    assert seen == [("3", "2"), ("3", "1"), ("3", "0")]
    r = g.request("GET", "/ip/x")
    assert r.status == 429
    assert r.headers["retry-after"] == "2"  # one token at 0.5/s
    assert r.headers["ratelimit-limit"] == "3"
    assert r.headers["ratelimit-remaining"] == "0"
    assert r.headers["ratelimit-reset"] == "6"  # about 3 tokens missing at 0.5/s
    assert r.json() == problem(429, "rate-limited", "Too many requests", "rate limit exceeded (ip); retry in 2s")
    assert g.request("GET", "/free/x").status == 200  # other routes are not affected
    assert g.metric("gateway_ratelimit_rejections_total", route="/ip", scope="ip") == 1
    time.sleep(2.1)
    assert g.request("GET", "/ip/x").status == 200  # refilled


def test_user_buckets_are_per_user(tmp_path, procs, upstream, redis_url, keys):
    g = _gateway(tmp_path, procs, upstream, redis_url)
    _wait_redis(g)

    def call(sub):
        return g.request("GET", "/user/x", headers={"Authorization": f"Bearer {keys.token(sub=sub)}"})

    deadline = time.monotonic() + 10
    while (r := call("1000")).status == 401:  # JWKS still loading
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert r.status == 200
    assert call("1000").status == 200
    r = call("1000")
    assert r.status == 429
    assert r.json()["detail"] == "rate limit exceeded (user); retry in 2s"
    assert [call("2000").status for _ in range(3)] == [200, 200, 429]


def test_buckets_are_shared_by_gateway_processes(tmp_path, procs, upstream, redis_url):
    g = _gateway(tmp_path, procs, upstream, redis_url, GATEWAY_WORKERS="2")
    _wait_redis(g, workers=2)
    statuses = [g.request("GET", "/ip/x").status for _ in range(6)]  # a new connection each: both workers
    assert statuses == [200, 200, 200, 429, 429, 429]
    workers = {line["pid"] for line in map(json.loads, g.log_text().splitlines()) if "gateway listening" in line.get("msg", "")}
    assert len(workers) == 2


def test_login_and_register_have_strict_buckets(tmp_path, procs, upstream, redis_url):
    n = free_port()
    g = Gateway(
        tmp_path,
        {
            "GATEWAY_UPSTREAMS": f"users={upstream.addr};feed=;notifications=",
            "REDIS_URL": redis_url,
            "GATEWAY_RATELIMIT_PREFIX": f"test:{n}:",
        },
    ).start()
    procs.append(g)
    _wait_redis(g)
    logins = [g.request("POST", "/api/v1/auth/login", body=b"{}").status for _ in range(11)]
    assert logins == [200] * 10 + [429]  # routes.yaml: login burst 10
    registers = [g.request("POST", "/api/v1/auth/register", body=b"{}").status for _ in range(6)]
    assert registers == [200] * 5 + [429]  # register burst 5


def test_fails_open_when_redis_is_down(tmp_path, procs, upstream):
    server = infra.start_redis(tmp_path / "redis", infra.free_port())
    try:
        g = _gateway(tmp_path, procs, upstream, server.url)
        _wait_redis(g)
        assert g.request("GET", "/ip/x").headers["ratelimit-remaining"] == "2"
    finally:
        server.proc.kill()
        server.proc.wait()
    statuses = [g.request("GET", "/ip/x") for _ in range(10)]
    assert [r.status for r in statuses] == [200] * 10
    assert all("ratelimit-limit" not in r.headers for r in statuses)
    assert g.metric("gateway_ratelimit_failopen_total") >= 10
    assert "rate limiting fails open" in g.log_text()


def test_client_ip_from_trusted_proxy_chain_only(tmp_path, procs, upstream, redis_url):
    g = _gateway(tmp_path, procs, upstream, redis_url, GATEWAY_TRUSTED_PROXIES="127.0.0.0/8, 10.0.0.0/8")
    _wait_redis(g)

    def call(xff):
        return g.request("GET", "/ip/x", headers={"X-Forwarded-For": xff})

    # peer 127.0.0.1 is trusted: the client is the right-most untrusted hop of the chain
    assert [call("6.6.6.6, 10.1.2.3").status for _ in range(4)] == [200, 200, 200, 429]
    r = call("7.7.7.7")  # another client behind the same proxy has its own bucket
    assert r.status == 200
    assert r.json()["headers"]["x-forwarded-for"] == "7.7.7.7, 127.0.0.1"
    assert call("garbage, 10.1.2.3").status == 200  # unparsable chain: fall back to the peer itself
    deadline = time.monotonic() + 5
    while not any(e["client"] == "7.7.7.7" for e in g.access_log()):
        assert time.monotonic() < deadline
        time.sleep(0.1)


# -- leases: a hot key does not cost a Redis call per request, and the limit still holds ----------

HOT_ROUTES = """
upstreams:
  svc: {replicas: []}
routes:
  - prefix: /hot
    service: svc
    auth: none
    ratelimit: {name: hot-%(n)s, ip: {rate: %(rate)s, burst: %(burst)s}}
"""


def _hot_gateway(tmp_path, procs, upstream, redis_url, rate, burst, workers=2):
    n = free_port()
    g = Gateway(
        tmp_path,
        {
            "GATEWAY_UPSTREAMS": f"svc={upstream.addr}",
            "REDIS_URL": redis_url,
            "GATEWAY_RATELIMIT_PREFIX": f"test:{n}:",
            "GATEWAY_WORKERS": str(workers),
            "GATEWAY_ACCESS_LOG": "1",
        },
        HOT_ROUTES % {"n": n, "rate": rate, "burst": burst},
    ).start()
    procs.append(g)
    _wait_redis(g, workers=workers)
    return g


def _hammer(g, connections: int, *, requests: int | None = None, seconds: float | None = None) -> list:
    """`connections` keep-alive clients in threads sending GET /hot/x, each `requests` times or
    for `seconds`: [(sent, received, status, headers, body)] with monotonic times."""
    import http.client
    import threading

    out: list = []
    lock = threading.Lock()
    start = threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
        conn.connect()
        start.wait()
        until = time.monotonic() + seconds if seconds is not None else None
        done = []
        i = 0
        while (requests is None or i < requests) and (until is None or time.monotonic() < until):
            sent = time.monotonic()
            conn.request("GET", "/hot/x")
            resp = conn.getresponse()
            body = resp.read()
            done.append((sent, time.monotonic(), resp.status, {k.lower(): v for k, v in resp.getheaders()}, body))
            i += 1
        conn.close()
        with lock:
            out.extend(done)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    return out


def _script_calls(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


def _workers_that_answered(g, status: int) -> set:
    return {e["pid"] for e in g.access_log() if e.get("status") == status and e.get("path", "").startswith("/hot")}


def test_hot_key_is_served_from_leases_not_a_redis_call_per_request(tmp_path, procs, upstream):
    """Two workers, a big bucket: every request admitted, and Redis sees a handful of script calls
    (leases growing 1, 2, 4, ... and given back), not one per request as before."""
    from gateway.ratelimit import lease_cap

    server = infra.start_redis(tmp_path / "redis", infra.free_port())
    try:
        g = _hot_gateway(tmp_path, procs, upstream, server.url, rate=1000, burst=100000)
        before = _script_calls(server.url)
        results = _hammer(g, 8, requests=60)
        calls = _script_calls(server.url) - before
    finally:
        server.stop()
    assert len(results) == 480
    assert {status for _, _, status, _, _ in results} == {200}
    assert all(h["ratelimit-limit"] == "100000" for _, _, _, h, _ in results)
    assert lease_cap(1000, 100000, 0.25) == 250
    # per worker: grants of 1, 2, 4, ... (each doubling when a lease ran out) plus give-backs
    assert calls <= len(results) // 8, f"{calls} script calls for {len(results)} requests"


def test_limit_holds_across_two_workers_within_the_documented_bound(tmp_path, procs, upstream, redis_url):
    """16 keep-alive clients over two workers drain one bucket (rate 20/s, burst 40; each worker
    leases up to cap = min(burst // 10, rate x 0.25 s) = 4 tokens). From a full bucket, admissions
    never exceed what one exact bucket allows (burst + rate x elapsed), over any window at most
    N x cap more (N = 2 workers); refusals are 429 problem+json with Retry-After."""
    from gateway.ratelimit import lease_cap

    rate, burst, workers = 20, 40, 2
    cap = lease_cap(rate, burst, 0.25)
    assert cap == 4
    g = _hot_gateway(tmp_path, procs, upstream, redis_url, rate=rate, burst=burst, workers=workers)
    results = sorted(_hammer(g, 16, seconds=1.5))
    admitted = [(sent, received) for sent, received, status, _, _ in results if status == 200]
    refused = [(h, body) for _, _, status, h, body in results if status == 429]
    assert len(admitted) + len(refused) == len(results)
    elapsed = results[-1][1] - results[0][0]
    assert burst - workers * cap <= len(admitted) <= burst + rate * elapsed, (len(admitted), elapsed)
    # any window [a, b]: the requests surely admitted inside it (sent at or after a, answered by b)
    for i, (a, _) in enumerate(admitted):
        for _, b in admitted[i:]:
            if b <= a:
                continue
            inside = sum(1 for s, r in admitted if s >= a and r <= b)
            assert inside <= burst + rate * (b - a) + workers * cap, (inside, b - a)
    assert refused, "the bucket was drained: some requests must be refused"
    headers, body = refused[0]
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-limit"] == str(burst)
    assert headers["ratelimit-remaining"] == "0"
    detail = json.loads(body)
    assert detail["status"] == 429 and detail["detail"].startswith("rate limit exceeded (ip); retry in ")
    eventually(lambda: len(_workers_that_answered(g, 200)) == workers, 10, "both workers admitted requests")


def test_fails_open_while_redis_is_down_and_limits_again_after(tmp_path, procs, upstream):
    port = infra.free_port()
    server = infra.start_redis(tmp_path / "redis", port)
    try:
        g = _gateway(tmp_path, procs, upstream, server.url)
        _wait_redis(g)
        assert g.request("GET", "/ip/x").headers["ratelimit-remaining"] == "2"
        server.proc.kill()
        server.proc.wait()
        down = [g.request("GET", "/ip/x") for _ in range(6)]  # burst 3: would be refused with Redis up
        assert [r.status for r in down] == [200] * 6
        assert all("ratelimit-limit" not in r.headers for r in down)
        server = infra.start_redis(tmp_path / "redis", port)  # the same data directory: the bucket survives
        eventually(lambda: "ratelimit-limit" in g.request("GET", "/ip/x").headers, 15, "limits apply again")
        statuses = [g.request("GET", "/ip/x").status for _ in range(4)]
        assert 429 in statuses, statuses
    finally:
        server.stop()
    assert g.metric("gateway_ratelimit_failopen_total") >= 6
