"""Shared failures are not amplified: which answers count toward ejection, the ejection cap, health
checks, panic mode and bounded retries, each against real replicas and a real gateway process
(docs/gateway.md#load-balancing)."""

from __future__ import annotations

import collections
import sys

import pytest

from .conftest import ROOT, Upstream, eventually, free_port
from .test_balancing import _gateway, _replicas

sys.path.insert(0, str(ROOT / "dev"))
import infra

pytestmark = pytest.mark.timeout(120)

# passive detection only unless a test says otherwise: the start-up check, then none for a minute
PASSIVE = {"GATEWAY_HEALTH_INTERVAL": "60", "GATEWAY_EJECT_AFTER": "2", "GATEWAY_EJECT_BASE": "30"}


def _ejections(g, replica=None) -> float:
    return g.metric("gateway_upstream_ejections_total", service="svc", **({"replica": replica} if replica else {}))


def _flag(tmp_path, name):
    """An upstream whose /health/ready answers 503 while <flag>.unready exists."""
    base = tmp_path / f"{name}-health"
    return base, base.with_name(base.name + ".unready")


@pytest.mark.parametrize(
    "query",
    ["status=503&retry_after=2", "status=500&cause=dependency", "status=503&cause=dependency"],
    ids=["503-retry-after", "500-marked", "503-marked"],
)
def test_answers_caused_by_dependencies_neither_eject_nor_retry(tmp_path, procs, query):
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, **PASSIVE)
    answers = [g.request("GET", f"/a/x?{query}&only=r2") for _ in range(30)]
    from_r2 = [r for r in answers if r.upstream == "r2"]
    assert len(from_r2) >= 5  # r2 stayed in rotation all along
    status = int(query.split("&")[0].split("=")[1])
    assert {r.status for r in from_r2} == {status}  # passed through as the replica answered
    assert {r.status for r in answers if r.upstream == "r1"} == {200}
    assert _ejections(g) == 0
    assert g.metric("gateway_upstream_replica_up", service="svc", replica=ups[1].addr) == 1
    assert g.metric("gateway_upstream_retries_total", service="svc") == 0  # another replica shares the cause
    assert g.metric("gateway_upstream_dependency_failures_total", service="svc", replica=ups[1].addr) == len(from_r2)


@pytest.mark.parametrize("query", ["status=502", "status=500", "status=503"], ids=["502", "500", "503-unmarked"])
def test_a_replicas_own_failures_eject_it(tmp_path, procs, query):
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, **PASSIVE)
    for _ in range(30):
        g.request("GET", f"/a/x?{query}&only=r2")
    assert _ejections(g, ups[1].addr) == 1
    assert g.metric("gateway_upstream_replica_up", service="svc", replica=ups[1].addr) == 0
    assert {g.request("GET", "/a/x").upstream for _ in range(10)} == {"r1"}


def test_client_errors_never_count_toward_ejection(tmp_path, procs):
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, **PASSIVE)
    statuses = collections.Counter()
    for code in (400, 401, 404, 409, 413, 422, 429):
        for _ in range(6):
            r = g.request("GET", f"/a/x?status={code}&only=r2")
            statuses[(r.upstream, r.status)] += 1
    assert all(status == (200 if up == "r1" else int(status)) for (up, status) in statuses)
    assert sum(n for (up, _), n in statuses.items() if up == "r2") >= 10
    assert _ejections(g) == 0
    assert g.metric("gateway_upstream_errors_total", service="svc") == 0


def test_ejection_is_capped_at_a_share_of_the_cluster(tmp_path, procs):
    """Every replica fails on its own: the default cap (10 %, at least one) ejects only one of three."""
    ups = _replicas(3, procs)
    g = _gateway(tmp_path, procs, ups, **PASSIVE)
    answers = [g.request("GET", "/a/x?status=500") for _ in range(40)]
    assert {r.status for r in answers} == {500}
    assert _ejections(g) == 1
    assert sum(g.metric("gateway_upstream_replica_up", service="svc", replica=u.addr) for u in ups) == 2
    assert g.metric("gateway_upstream_ejections_skipped_total", service="svc", reason="max_ejection_percent") >= 1


def test_ejection_cap_is_configurable(tmp_path, procs):
    ups = _replicas(4, procs)
    g = _gateway(tmp_path, procs, ups, **PASSIVE, GATEWAY_MAX_EJECTION_PERCENT="50")
    for _ in range(60):
        g.request("GET", "/a/x?status=500")
    assert _ejections(g) == 2


def test_the_last_healthy_replica_is_never_ejected_whatever_the_cap(tmp_path, procs):
    base, unready = _flag(tmp_path, "r1")
    ups = [Upstream("r1", free_port(), str(base)).start(), Upstream("r2", free_port()).start()]
    procs.extend(ups)
    unready.write_text("")  # r1 fails its health checks: r2 is the only healthy replica
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="0.3", GATEWAY_EJECT_AFTER="2", GATEWAY_MAX_EJECTION_PERCENT="100")
    eventually(
        lambda: (
            g.metric("gateway_upstream_replica_up", service="svc", replica=ups[0].addr) == 0
            and g.metric("gateway_upstream_replica_up", service="svc", replica=ups[1].addr) == 1
        ),
        10,
        "r1 out of rotation by its health check",
    )
    answers = [g.request("GET", "/a/x?status=500") for _ in range(20)]
    assert {(r.status, r.upstream) for r in answers} == {(500, "r2")}
    assert _ejections(g) == 0
    assert g.metric("gateway_upstream_ejections_skipped_total", service="svc", reason="last_in_rotation") >= 1


def test_a_replica_failing_health_checks_stays_out_of_rotation(tmp_path, procs):
    """Out by its health check, a replica gets nothing, also once an ejection of it has expired and
    while the healthy replica answers 5xx (dependency-caused or not)."""
    base, unready = _flag(tmp_path, "r2")
    ups = [Upstream("r1", free_port()).start(), Upstream("r2", free_port(), str(base)).start()]
    procs.extend(ups)
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="0.3", GATEWAY_EJECT_AFTER="2", GATEWAY_EJECT_BASE="0.2")
    for _ in range(30):  # r2 ejected for 0.2 s by its own failures
        g.request("GET", "/a/x?status=502&only=r2")
    assert _ejections(g, ups[1].addr) >= 1
    unready.write_text("")
    eventually(lambda: "health check svc " + ups[1].addr + ": failing" in g.log_text(), 10, "r2's check failing")
    answers = [g.request("GET", q) for q in ["/a/x", "/a/x?status=503&retry_after=1", "/a/x?status=500"] * 15]
    assert {r.upstream for r in answers} == {"r1"}
    unready.unlink()
    eventually(lambda: g.request("GET", "/a/x").upstream == "r2", 10, "r2 back after its check passes")


def test_panic_mode_when_no_replica_is_in_rotation(tmp_path, procs):
    flags = [_flag(tmp_path, f"r{i}") for i in (1, 2)]
    ups = [Upstream(f"r{i}", free_port(), str(flags[i - 1][0])).start() for i in (1, 2)]
    procs.extend(ups)
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="0.3")
    assert g.metric("gateway_upstream_panic", service="svc") == 0
    for _, unready in flags:
        unready.write_text("")
    eventually(lambda: g.metric("gateway_upstream_panic", service="svc") == 1, 10, "panic mode")
    assert "panic mode: svc has 0 of 2 replicas in rotation" in g.log_text()
    answers = [g.request("GET", "/a/x") for _ in range(30)]
    assert {r.status for r in answers} == {200} and {r.upstream for r in answers} == {"r1", "r2"}
    for _, unready in flags:
        unready.unlink()
    eventually(lambda: g.metric("gateway_upstream_panic", service="svc") == 0, 10, "panic mode over")
    assert "panic mode over: svc" in g.log_text()


def test_panic_threshold_balances_over_all_when_too_few_are_healthy(tmp_path, procs):
    base, unready = _flag(tmp_path, "r3")
    ups = [
        Upstream("r1", free_port()).start(),
        Upstream("r2", free_port()).start(),
        Upstream("r3", free_port(), str(base)).start(),
    ]
    procs.extend(ups)
    unready.write_text("")
    g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="0.3", GATEWAY_PANIC_THRESHOLD="80")
    eventually(lambda: g.metric("gateway_upstream_panic", service="svc") == 1, 10, "panic: 2 of 3 < 80 %")
    assert {g.request("GET", "/a/x").upstream for _ in range(60)} == {"r1", "r2", "r3"}
    unready.unlink()
    eventually(lambda: g.metric("gateway_upstream_panic", service="svc") == 0, 10, "panic over")


def test_a_post_with_an_idempotency_key_is_retried_one_without_is_not(tmp_path, procs):
    ups = _replicas(2, procs)
    g = _gateway(tmp_path, procs, ups, **PASSIVE)
    answers = []
    while (not answers or answers[-1].status == 200) and len(answers) < 60:  # r2 exits on the first it gets
        answers.append(g.request("POST", "/a/x?die=r2", body=b'{"a": 1}'))
    eventually(lambda: ups[1].proc.poll() is not None, 10, "r2 exited")
    assert answers[-1].status == 502 and answers[-1].json()["detail"] == "svc closed the connection without answering"
    assert {r.status for r in answers[:-1]} <= {200}
    assert g.metric("gateway_upstream_retries_total", service="svc", reason="reset") == 0
    ups[1].start()
    answers = []
    while not g.metric("gateway_upstream_retries_total", service="svc", reason="reset") and len(answers) < 60:
        answers.append(g.request("POST", "/a/x?die=r2", body=b'{"a": 1}', headers={"Idempotency-Key": "k-1"}))
    assert g.metric("gateway_upstream_retries_total", service="svc", reason="reset") == 1
    assert {(r.status, r.upstream) for r in answers} == {(200, "r1")}
    assert answers[-1].json()["body"] == '{"a": 1}'  # the body was replayed
    assert answers[-1].json()["headers"]["idempotency-key"] == "k-1"


def test_retries_are_bounded_by_the_budget(tmp_path, procs):
    """No retry storm: with a bank of 2 and nothing earned per request, the third 502 of r2 reaches
    the client."""
    ups = _replicas(2, procs)
    g = _gateway(
        tmp_path, procs, ups, **{**PASSIVE, "GATEWAY_EJECT_AFTER": "1000"}, GATEWAY_RETRY_MIN="2", GATEWAY_RETRY_BUDGET="0"
    )
    answers = [g.request("GET", "/a/x?status=502&only=r2") for _ in range(40)]
    assert g.metric("gateway_upstream_retries_total", service="svc", reason="status_502") == 2
    assert g.metric("gateway_retry_budget_exhausted_total", service="svc") >= 1
    assert {(r.status, r.upstream) for r in answers} == {(200, "r1"), (502, "r2")}


def test_redis_away_neither_ejects_the_live_replica_nor_leaves_traffic_on_a_dead_one(tmp_path, procs):
    """The issue's scenario: two replicas, one stopped (not yet noticed by a health check); Redis goes
    away and the live replica answers 503 + Retry-After for what needs it. The gateway keeps the live
    replica in rotation and takes the dead one out, so when Redis is back every request succeeds."""
    redis_port = free_port()
    redis = infra.start_redis(tmp_path / "redis", redis_port)
    try:
        ups = _replicas(2, procs)
        g = _gateway(tmp_path, procs, ups, GATEWAY_HEALTH_INTERVAL="60")  # default ejection settings
        path = f"/a/x?needs_redis={redis_port}"
        assert {g.request("GET", path).status for _ in range(10)} == {200}
        ups[1].kill()  # stopped; still in rotation for the gateway until it fails
        redis.stop()
        during = [g.request("GET", path) for _ in range(40)]
        assert {r.status for r in during} == {503}  # the live replica's answer, never a 502
        assert all(r.headers.get("retry-after") == "2" for r in during)
        assert _ejections(g, ups[0].addr) == 0
        assert _ejections(g, ups[1].addr) == 1  # connection refused: its own failure
        redis = infra.start_redis(tmp_path / "redis", redis_port)
        after = [g.request("GET", path) for _ in range(100)]
        assert {(r.status, r.upstream) for r in after} == {(200, "r1")}
        assert g.metric("gateway_upstream_replica_up", service="svc", replica=ups[0].addr) == 1
        assert g.metric("gateway_upstream_panic", service="svc") == 0
    finally:
        redis.stop()
