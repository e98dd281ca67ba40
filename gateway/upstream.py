"""Upstream clusters: replicas, keep-alive pools, power-of-two-choices, health and discovery.

- Replicas come from config (`host:port`) and DNS (`dns:name:port`: every A record of name,
  re-resolved every GATEWAY_DNS_INTERVAL s; GATEWAY_HOSTS_FILE replaces the system resolver by
  a hosts-format file, for tests and local setups).
- Picking: power of two choices over replicas in rotation, fewer outstanding requests wins.
  When no replica is in rotation, or fewer than GATEWAY_PANIC_THRESHOLD % of them, all known
  replicas are used (panic mode, as Envoy does): health checks can be wrong, a guess beats a
  certain 503. Retries go to another replica of the same set (`rotation`).
- Active health checks: GET /health/ready on each replica every GATEWAY_HEALTH_INTERVAL s;
  a non-200 takes it out of rotation until a check passes (an expired ejection does not).
- Concurrency limit (`max_outstanding` per replica, per upstream in the route table): a request
  that finds every replica at its limit waits in the service's FIFO queue and goes to the first
  replica that frees a slot; 503 after `queue_timeout` s or when `max_queue` are already waiting.
  The replicas then work on what they can run at once, and the rest waits in arrival order
  here instead of in one replica's accept/thread queue (HAProxy's maxconn + queue).
- Passive outlier ejection: GATEWAY_EJECT_AFTER consecutive failures of the replica itself
  (connect errors, resets, timeouts, 5xx) eject it for GATEWAY_EJECT_BASE * 2^n s (n = times
  ejected recently, capped at GATEWAY_EJECT_MAX). A 5xx its dependencies caused (a 503 with
  Retry-After, or any 5xx marked `X-Failure-Cause: dependency`) is shared by every replica and
  does not count; neither do 4xx. At most GATEWAY_MAX_EJECTION_PERCENT of the cluster is ejected
  at once (at least one replica may be, as Envoy's max_ejection_percent), and never the last
  replica in rotation.
"""

from __future__ import annotations

import collections
import logging
import random
import re
import socket
import time

import cython

from . import config, httpclient, metrics

log = logging.getLogger("gateway.upstream")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# a 5xx the replica's dependencies caused (shared by every replica): marked by the services
# (shared.problems: X-Failure-Cause: dependency), or a 503 that says when to come back
_CAUSE_RE = re.compile(rb"\r\nx-failure-cause[ \t]*:[ \t]*dependency", re.I)
_RETRY_AFTER_RE = re.compile(rb"\r\nretry-after[ \t]*:", re.I)
_IDEMPOTENCY_KEY_RE = re.compile(rb"(?:^|\r\n)idempotency-key[ \t]*:", re.I)


def dependency_caused(status: int, head: bytes) -> bool:
    """Whether a 5xx answer (its head, without the final CRLF CRLF) is one the replica's
    dependencies caused rather than the replica itself."""
    if _CAUSE_RE.search(head) is not None:
        return True
    return status == 503 and _RETRY_AFTER_RE.search(head) is not None


def replayable(method: str, fwd: bytes | None) -> bool:
    """Whether a request that reached a replica may be sent again: an idempotent method, or a
    request with an Idempotency-Key (the service answers a replay from its record of the key).
    `fwd`: the request's forwarded header block. The body is always kept (proxy.Req.body)."""
    if method in IDEMPOTENT:
        return True
    return fwd is not None and _IDEMPOTENCY_KEY_RE.search(fwd) is not None


class Replica:
    """One address of a service (an extension type when compiled: upstream.pxd)."""

    def __init__(self, service: str, host: str, port: int, cluster: Cluster | None = None):
        self.cluster = cluster  # whose queue a freed slot serves (proxy.Req._unbind)
        self.service = service
        self.host = host
        self.port = port
        self.addr = f"{host}:{port}"
        self.idle: list = []  # idle keep-alive UpstreamConn, most recently used last
        self.outstanding = 0
        self.healthy = True  # optimistic until the first check says otherwise
        self.ejected_until = 0.0
        self.eject_count = 0
        self.failures = 0
        self.removed = False
        self.last_ejection = -1e9
        self.in_rotation = True
        self.open_conns = 0

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def __repr__(self):
        return f"Replica({self.service} {self.addr})"


def parse_hosts_file(path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    try:
        with open(path) as fh:
            for text in fh:
                line = text.split("#", 1)[0].split()
                if len(line) < 2 or ":" in line[0]:  # IPv4 only, like the A-record lookup
                    continue
                for name in line[1:]:
                    addrs = out.setdefault(name.lower(), [])
                    if line[0] not in addrs:
                        addrs.append(line[0])
    except OSError as exc:
        raise OSError(f"hosts file {path}: {exc}") from None
    return out


class Cluster:
    """A service's replicas and the rules for choosing among them (an extension type when
    compiled: upstream.pxd; proxy.py calls pick, success and failure in C)."""

    def __init__(self, name: str, specs: list[str], settings):
        self.name = name
        self.settings = settings
        self.specs: list[str] = []
        self.replicas: list[Replica] = []
        self.by_addr: dict[str, Replica] = {}
        self.live: list[Replica] = []
        self.rotation: list[Replica] = []  # what pick() balances over: live, or every replica in panic mode
        self.panic = False
        self.static: list[tuple[str, int]] = []
        self.dns: list[tuple[str, int]] = []
        self.resolved: dict[tuple[str, int], list[str]] = {}
        self.waiting: collections.deque = collections.deque()  # proxy.Req objects waiting for a slot, oldest first
        self.m_queued = metrics.QUEUED.labels(name)
        self.m_depth = metrics.QUEUE_DEPTH.labels(name)
        self.m_panic = metrics.PANIC.labels(name)
        self.m_panic.set(0)
        self.apply_limits(settings)
        self.configure(specs)

    def apply_limits(self, settings) -> None:
        self.settings = settings
        lim = settings.limits.get(self.name, config.DEFAULT_LIMITS)  # no entry: a cluster kept for in-flight requests
        self.max_outstanding = lim.max_outstanding
        self.queue_timeout = lim.queue_timeout
        self.max_queue = lim.max_queue

    def configure(self, specs: list[str]) -> None:
        self.specs = list(specs)
        self.static, self.dns = [], []
        for spec in specs:
            if spec.startswith("dns:"):
                host, _, port = spec[4:].rpartition(":")
                self.dns.append((host, int(port)))
            else:
                host, _, port = spec.rpartition(":")
                self.static.append((host.strip("[]"), int(port)))
        self.resolved = {k: v for k, v in self.resolved.items() if k in self.dns}
        self._rebuild()

    def _rebuild(self) -> None:
        wanted: list[tuple[str, int]] = list(self.static)
        for key in self.dns:
            for ip in self.resolved.get(key, []):
                wanted.append((ip, key[1]))
        new_by_addr: dict[str, Replica] = {}
        for host, port in wanted:
            addr = f"{host}:{port}"
            if addr in new_by_addr:
                continue
            rep = self.by_addr.get(addr) or Replica(self.name, host, port, self)
            new_by_addr[addr] = rep
        for addr, rep in self.by_addr.items():
            if addr not in new_by_addr:
                rep.removed = True
                rep.close_idle()
                metrics.HEALTHY.labels(self.name, addr).set(0)
                log.info("replica removed: %s %s", self.name, addr)
        for addr in new_by_addr:
            if addr not in self.by_addr:
                log.info("replica added: %s %s", self.name, addr)
        self.by_addr = new_by_addr
        self.replicas = list(new_by_addr.values())
        self.refresh_live(time.monotonic())

    def refresh_live(self, now: float) -> None:
        live = []
        for r in self.replicas:
            ok = r.healthy and r.ejected_until <= now
            if ok != r.in_rotation:
                r.in_rotation = ok
                log.info("replica %s %s %s", self.name, r.addr, "back in rotation" if ok else "out of rotation")
            metrics.HEALTHY.labels(self.name, r.addr).set(1 if ok else 0)
            if ok:
                live.append(r)
        self.live = live
        n = len(self.replicas)
        panic = n > 0 and (not live or len(live) * 100 < self.settings.panic_threshold * n)
        if panic != self.panic:
            self.panic = panic
            self.m_panic.set(1 if panic else 0)
            if panic:
                log.warning(
                    "panic mode: %s has %d of %d replicas in rotation; balancing over all of them", self.name, len(live), n
                )
            else:
                log.warning("panic mode over: %s has %d of %d replicas in rotation", self.name, len(live), n)
        self.rotation = self.replicas if panic else live

    # -- hot path ---------------------------------------------------------------------------
    def pick(self, tried: tuple) -> Replica | None:
        """Power of two choices over the rotation, never a replica in `tried` while another is left."""
        live: list = self.rotation
        a: Replica
        b: Replica
        n = len(live)
        if n == 0:
            return None
        if n == 1:
            r = live[0]
            if tried and r in tried:
                return self._any_untried(tried)
            return r
        if n == 2:
            a, b = live if random.getrandbits(1) else (live[1], live[0])
        else:
            i = random.randrange(n)
            j = random.randrange(n - 1)
            if j >= i:
                j += 1
            a, b = live[i], live[j]
        if tried:
            if a in tried:
                a = b
            elif b in tried:
                b = a
            if a in tried:
                return self._any_untried(tried)
        return a if a.outstanding <= b.outstanding else b

    def pick_free(self, tried: tuple) -> Replica | None:
        """The least-loaded replica below max_outstanding and not in `tried`; None when all are full."""
        cap = self.max_outstanding
        best = None
        for r in self.rotation:
            if r.outstanding < cap and (not tried or r not in tried) and (best is None or r.outstanding < best.outstanding):
                best = r
        return best

    def wake(self) -> None:
        """A slot freed (or replicas changed): dispatch waiting requests, oldest first, while a
        replica has room. A request whose free replica it already tried goes back to the end."""
        w = self.waiting
        for _ in range(len(w)):
            if not w or (self.max_outstanding and self.pick_free(()) is None):
                return
            r = w.popleft()
            if not r.queued:  # answered meanwhile (an error, a timeout, the client went away)
                continue
            r.queued = False
            r.from_queue()

    def unqueue(self, r) -> None:
        try:
            self.waiting.remove(r)
        except ValueError:
            pass

    def _any_untried(self, tried: tuple) -> Replica | None:
        best = None
        for r in self.rotation:
            if r not in tried and (best is None or r.outstanding < best.outstanding):
                best = r
        return best

    def has_alternative(self, tried: tuple) -> bool:
        """A replica in rotation not tried yet: a retry never goes to one out of rotation."""
        # a loop, not any(): Cython compiles no generator expression in a cpdef method
        for r in self.rotation:  # noqa: SIM110
            if r not in tried:
                return True
        return False

    # -- outcomes ---------------------------------------------------------------------------
    def success(self, r: Replica) -> None:
        if r.failures:
            r.failures = 0
        if r.eject_count and time.monotonic() - r.last_ejection > self.settings.eject_max:
            r.eject_count = 0

    def failed_answer(self, r: Replica, status: cython.int, head: bytes) -> bool:
        """A 5xx answer from r (its head): True when it is r's own failure (counted toward
        ejection, and worth a retry elsewhere), False when its dependencies caused it (every
        replica shares them: not counted, not retried)."""
        if dependency_caused(status, head):
            metrics.DEPENDENCY_FAILURES.labels(self.name, r.addr).inc()
            return False
        self.failure(r, "5xx")
        return True

    def failure(self, r: Replica, kind: str) -> None:
        """r's own failure (connect error, reset, timeout, 5xx of its own)."""
        metrics.UPSTREAM_ERRORS.labels(self.name, r.addr, kind).inc()
        r.failures += 1
        if r.failures < self.settings.eject_after or r.removed:
            return
        now = time.monotonic()
        if r.ejected_until > now:
            return
        others = 0
        for x in self.live:
            if x is not r:
                others += 1
        if not others:
            metrics.EJECTIONS_SKIPPED.labels(self.name, "last_in_rotation").inc()
            return  # never eject the last replica in rotation
        ejected = 0
        for x in self.replicas:
            if x.ejected_until > now:
                ejected += 1
        if ejected >= max(1, len(self.replicas) * self.settings.max_ejection_percent // 100):
            metrics.EJECTIONS_SKIPPED.labels(self.name, "max_ejection_percent").inc()
            return
        duration = min(self.settings.eject_max, self.settings.eject_base * (2**r.eject_count))
        r.eject_count += 1
        r.ejected_until = now + duration
        r.last_ejection = now
        r.failures = 0
        r.close_idle()
        metrics.EJECTIONS.labels(self.name, r.addr).inc()
        log.warning(
            "replica ejected: %s %s for %.1fs after %s failures (%s)",
            self.name,
            r.addr,
            duration,
            self.settings.eject_after,
            kind,
        )
        self.refresh_live(now)

    # -- background -------------------------------------------------------------------------
    async def health_check(self, r: Replica) -> None:
        s = self.settings
        try:
            status, _ = await httpclient.get(r.host, r.port, s.health_path, timeout=max(0.2, min(2.0, s.health_interval)))
            ok = status == 200
            why = f"status {status}"
        except (TimeoutError, OSError, ValueError) as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok != r.healthy:
            log.warning("health check %s %s: %s", self.name, r.addr, "passing" if ok else f"failing ({why})")
            r.healthy = ok
            self.refresh_live(time.monotonic())

    async def resolve(self, loop) -> None:
        if not self.dns:
            return
        s = self.settings
        changed = False
        for host, port in self.dns:
            try:
                if s.hosts_file:
                    ips = parse_hosts_file(s.hosts_file).get(host.lower())
                    if not ips:
                        raise OSError(f"{host} not in {s.hosts_file}")
                else:
                    infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
                    ips = sorted({info[4][0] for info in infos})
            except OSError as exc:
                # keep the last known addresses: a DNS blip must not empty the cluster
                log.warning(
                    "resolving %s for %s failed: %s (keeping %s)", host, self.name, exc, self.resolved.get((host, port), [])
                )
                continue
            if ips != self.resolved.get((host, port)):
                self.resolved[(host, port)] = list(ips)
                changed = True
        if changed:
            self._rebuild()

    def tick(self, now: float) -> None:
        for r in self.replicas:
            if not r.in_rotation and r.healthy and r.ejected_until <= now:
                self.refresh_live(now)
                break
        if self.waiting:  # a limit raised by a reload, a replica added or back in rotation
            self.wake()
        self.m_depth.set(len(self.waiting))
        for r in self.replicas:
            metrics.OUTSTANDING.labels(self.name, r.addr).set(r.outstanding)

    def close(self) -> None:
        for r in self.replicas:
            r.removed = True
            r.close_idle()
        for r in list(self.waiting):
            if r.queued and not r.client.closed and r.client.active is r:
                r.error(503, f"service {self.name} was removed from the configuration")
        self.waiting.clear()
        self.m_depth.set(0)
        self.m_panic.set(0)
