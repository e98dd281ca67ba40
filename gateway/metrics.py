"""Prometheus metrics. With several workers, prometheus_client's multiprocess mode aggregates
them (PROMETHEUS_MULTIPROC_DIR is set by the master before any worker imports this module).

Hot path: per-request counts go to `local` (Local: plain dicts, folded into Prometheus on every
tick). Compiled with the data path (gateway.COMPILED_MODULES; C declarations in metrics.pxd).
"""

from __future__ import annotations

import os

import cython
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
N_BUCKETS = len(BUCKETS)  # the histogram's last bucket is +Inf

REQUESTS = Counter("gateway_requests_total", "Requests answered, by route and status", ["route", "status"])
LATENCY = Histogram(
    "gateway_request_duration_seconds", "Time from request start to response end", ["route", "upstream"], buckets=BUCKETS
)
RETRIES = Counter("gateway_upstream_retries_total", "Requests retried on another replica", ["service", "reason"])
RETRY_BUDGET_EXHAUSTED = Counter("gateway_retry_budget_exhausted_total", "Retries refused by the retry budget", ["service"])
EJECTIONS = Counter("gateway_upstream_ejections_total", "Replicas ejected by outlier detection", ["service", "replica"])
EJECTIONS_SKIPPED = Counter(
    "gateway_upstream_ejections_skipped_total",
    "Ejections not made (reason: last_in_rotation, max_ejection_percent)",
    ["service", "reason"],
)
DEPENDENCY_FAILURES = Counter(
    "gateway_upstream_dependency_failures_total",
    "5xx answers caused by the replica's dependencies (not counted toward ejection)",
    ["service", "replica"],
)
PANIC = Gauge(
    "gateway_upstream_panic",
    "1 while the service is in panic mode (balanced over every replica)",
    ["service"],
    multiprocess_mode="max",
)
# min over the live workers: 1 only when every worker has the replica in rotation, which is what a
# rolling restart waits for before it stops the next replica (dev/stack.py Supervisor.rolling_restart)
HEALTHY = Gauge(
    "gateway_upstream_replica_up",
    "1 if the replica is in rotation (healthy and not ejected) in every gateway worker",
    ["service", "replica"],
    multiprocess_mode="livemin",
)
QUEUED = Counter(
    "gateway_upstream_queued_total", "Requests that waited because every replica was at max_outstanding", ["service"]
)
QUEUE_REJECTED = Counter(
    "gateway_upstream_queue_rejections_total",
    "Requests answered 503 because no replica freed a slot (reason: full, timeout)",
    ["service", "reason"],
)
OUTSTANDING = Gauge(
    "gateway_upstream_outstanding", "Requests in flight to the replica", ["service", "replica"], multiprocess_mode="livesum"
)
QUEUE_DEPTH = Gauge(
    "gateway_upstream_queue_depth", "Requests waiting for a free replica", ["service"], multiprocess_mode="livesum"
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Upstream failures", ["service", "replica", "kind"])
RATELIMITED = Counter("gateway_ratelimit_rejections_total", "Requests rejected with 429", ["route", "scope"])
RATELIMIT_FAILOPEN = Counter("gateway_ratelimit_failopen_total", "Requests let through because Redis failed")
REVOKED = Counter("gateway_revoked_tokens_total", "Requests rejected with 401 because the token was revoked")
REVOCATION_FAILOPEN = Counter(
    "gateway_revocation_failopen_total", "Revocation checks skipped (token accepted) because Redis failed"
)
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Requests rejected with 401")
OPEN_CONNECTIONS = Gauge("gateway_open_connections", "Open client connections", multiprocess_mode="livesum")
UPSTREAM_CONNECTIONS = Gauge("gateway_upstream_connections", "Open upstream connections", multiprocess_mode="livesum")
DRAINING = Gauge("gateway_draining", "1 while draining after SIGTERM", multiprocess_mode="max")
JWKS_FETCHES = Counter("gateway_jwks_fetches_total", "JWKS fetches", ["result"])
PROXY_COMPILED = Gauge(
    "gateway_proxy_compiled", "1 if the data path runs compiled (Cython), 0 if plain Python", multiprocess_mode="min"
)
CONFIG_RELOADS = Counter("gateway_config_reloads_total", "Configuration reloads", ["result"])


class Local:  # compiled: an extension type (metrics.pxd), whose observe() proxy.py calls in C
    """Per-process counts taken on the hot path with plain dict/list arithmetic and folded into
    the Prometheus metrics on every tick (0.1 s). prometheus_client's own inc()/observe() take a
    lock and loop over buckets per call: too dear at tens of thousands of requests per second.
    Folding histogram counts uses the child's bucket values directly (prometheus_client pinned)."""

    def __init__(self) -> None:
        self.requests: dict = {}  # (route, status) -> count
        self.latency: dict = {}  # (route, upstream) -> [count per bucket of BUCKETS..., +Inf, sum of seconds]

    def observe(self, route: str, status: cython.int, upstream: str, seconds: cython.double):
        key = (route, status)
        requests: dict = self.requests
        requests[key] = requests.get(key, 0) + 1
        key = (route, upstream)
        latency: dict = self.latency
        h: list | None = latency.get(key)
        if h is None:
            h = latency[key] = [0] * (N_BUCKETS + 1) + [0.0]
        i: cython.Py_ssize_t = 0
        while i < N_BUCKETS and seconds > BUCKETS[i]:  # the first bucket whose bound is >= seconds
            i += 1
        h[i] += 1
        h[N_BUCKETS + 1] += seconds

    def flush(self):
        if self.requests:
            requests, self.requests = self.requests, {}
            for (route, status), n in requests.items():
                REQUESTS.labels(route, str(status)).inc(n)
        if self.latency:
            latency, self.latency = self.latency, {}
            for (route, upstream), h in latency.items():
                child = LATENCY.labels(route, upstream)
                for i, n in enumerate(h[:-1]):
                    if n:
                        child._buckets[i].inc(n)
                child._sum.inc(h[-1])


local = Local()
observe = local.observe


def exposition() -> bytes:
    local.flush()
    if MULTIPROC:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def mark_process_dead(pid: int) -> None:
    if MULTIPROC:
        multiprocess.mark_process_dead(pid)
