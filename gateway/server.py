"""Process-level wiring: the per-process Gateway state, a worker's event loop, the multi-worker
master, signals (SIGTERM drain, SIGHUP reload) and background upkeep (timeouts, health checks,
DNS, JWKS)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import subprocess
import sys
import time

import uvloop

from . import PROXY_MODE, admin, auth, config, httpclient, metrics, proxy, tracing
from .proxy import ClientConn, GatewayBase
from .ratelimit import RedisLimiter
from .upstream import Cluster
from .wire import RequestIds, TraceIds, seed_trace_ids

log = logging.getLogger("gateway")
TICK = 0.1


class Gateway(GatewayBase):
    """The per-process gateway: fills in the state GatewayBase declares (every field the data
    path reads, C fields when compiled) from the configuration, and runs the background work."""

    def __init__(self, settings: config.Settings, loop):
        self.loop = loop
        self.settings = settings
        self.conns = set()
        self.clusters: dict[str, Cluster] = {}
        self.draining = False
        self.stopping = asyncio.Event()
        self.max_tries = 3
        self.retry_tokens = settings.retry_min
        self.log_buf = []
        self.access_head = f'"level":"info","logger":"gateway.access","service":"gateway","pid":{os.getpid()}'
        self.rl_prefix = settings.ratelimit_prefix.encode()
        self.rids = RequestIds(os.urandom(7).hex().encode())  # X-Request-ID: 14 random hex digits + a counter
        self._next_idle_sweep = 0.0
        self.verifier = auth.Verifier(
            issuer=settings.jwt_issuer, audience=settings.jwt_audience, leeway=settings.jwt_leeway, fetch=self._fetch_jwks
        )
        self.limiter = (
            RedisLimiter(
                settings.redis_url,
                timeout=settings.redis_timeout,
                on_failopen=metrics.RATELIMIT_FAILOPEN.inc,
                lease=settings.ratelimit_lease,
            )
            if settings.redis_url
            else None
        )
        if self.limiter is None:
            log.warning("REDIS_URL not set: rate limiting is disabled")
        # the access-token revocation set (shared/revocation.py), its own pipelined connection
        self.revocation = (
            RedisLimiter(
                settings.revocation_url,
                timeout=settings.redis_timeout,
                on_failopen=metrics.REVOCATION_FAILOPEN.inc,
                what="revocation checking",
            )
            if settings.revocation_url
            else None
        )
        if self.revocation is None:
            log.warning("REDIS_URL (or REVOCATION_REDIS_URL) not set: revoked tokens are not refused at the edge")
        self.orphans = {}
        try:
            self.tracer = tracing.from_env()  # None unless OTEL_TRACES_EXPORTER is set (gateway/tracing.py)
        except ValueError as exc:
            raise config.ConfigError(str(exc)) from None
        self.trace_bound = self.tracer.bound if self.tracer is not None else 0
        seed_trace_ids(int.from_bytes(os.urandom(8), "little"))
        self.tids = TraceIds(os.urandom(8).hex().encode(), os.urandom(4).hex().encode())
        self.apply(settings)

    # -- configuration ------------------------------------------------------------------------
    def apply(self, s: config.Settings) -> None:
        """Install a (re)loaded configuration. In-flight requests keep the objects they hold."""
        self.settings = s
        self.routes = list(s.routes)
        self.route_cache = {}  # (method, path) -> Route | False (404); see proxy.Req.run
        self.pool_size = s.pool_size
        self.keepalive_timeout = s.keepalive_timeout
        self.blocked = s.blocked
        self.blocked_re = re.compile("^(?:" + "|".join(re.escape(b) for b in s.blocked) + ")(?:[/?]|$)")
        self.access_log = s.access_log
        self.retry_per_request = s.retry_budget
        self.retry_cap = s.retry_min
        self.max_body_any = max([s.max_body] + [r.max_body for r in s.routes])
        self.trusted = s.trusted_proxies
        self.trusted_cache = {}
        self.revocation_ttl = s.revocation_cache
        # CORS: the response headers per allowed origin (bytes, as the Origin header arrives)
        if s.cors_origins:
            expose = b"Access-Control-Expose-Headers: " + config.CORS_EXPOSE_HEADERS.encode() + b"\r\n"
            self.cors = {
                o.encode(): b"Access-Control-Allow-Origin: " + o.encode() + b"\r\n" + expose + b"Vary: Origin\r\n"
                for o in s.cors_origins
            }
            self.cors_preflight = (
                b"Access-Control-Allow-Headers: "
                + s.cors_allow_headers.encode()
                + b"\r\nAccess-Control-Max-Age: %d\r\n" % s.cors_max_age
            )
        else:
            self.cors = None
            self.cors_preflight = b""
        self.bucket_args = {}
        for r in s.routes:
            if r.ratelimit is not None:
                for b in (r.ratelimit.ip, r.ratelimit.user):
                    if b is not None:
                        self.bucket_args[b] = [repr(b.rate).encode(), str(b.burst).encode()]
        for name, specs in s.upstreams.items():
            if name in self.clusters:
                self.clusters[name].apply_limits(s)
                if self.clusters[name].specs != specs:
                    self.clusters[name].configure(specs)
            else:
                self.clusters[name] = Cluster(name, specs, s)
        for name in list(self.clusters):
            if name not in s.upstreams:
                self.clusters.pop(name).close()

    def reload(self) -> None:
        try:
            s = config.load()
        except config.ConfigError as exc:
            metrics.CONFIG_RELOADS.labels("error").inc()
            log.error("config reload failed, keeping the running configuration: %s", exc)
            return
        # listeners, workers and Redis are fixed for the life of the process
        self.apply(s)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        log.info(
            "config reloaded from %s: %d routes, upstreams %s",
            s.routes_file,
            len(s.routes),
            {k: v for k, v in s.upstreams.items()},
        )
        self.loop.create_task(self._resolve_all())
        self.loop.create_task(self._check_all())

    def log_line(self, line: str) -> None:
        self.log_buf.append(line)
        if len(self.log_buf) >= 512:
            self.flush_log()

    def flush_log(self) -> None:
        if self.log_buf:
            buf, self.log_buf = self.log_buf, []
            try:
                sys.stdout.write("".join(buf))
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    # -- background ----------------------------------------------------------------------------
    async def _fetch_jwks(self) -> bytes:
        s = self.settings
        timeout = 3.0
        if s.jwks_url:
            status, body = await httpclient.get_url(s.jwks_url, timeout=timeout)
        else:
            cluster = self.clusters.get(s.jwks_service)
            rep = cluster.pick(()) if cluster else None
            if rep is None:
                raise ConnectionError(f"no replica of {s.jwks_service} to fetch the JWKS from")
            status, body = await httpclient.get(rep.host, rep.port, s.jwks_path, timeout=timeout)
        if status != 200:
            raise ConnectionError(f"JWKS answered {status}")
        return body

    async def tick_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(TICK)
            now = time.monotonic()
            try:
                for c in list(self.conns):
                    c.on_tick(now)
                if self.limiter is not None:
                    self.limiter.tick(now)
                if self.revocation is not None:
                    self.revocation.tick(now)
                for cl in self.clusters.values():
                    cl.tick(now)
                if now >= self._next_idle_sweep:
                    self._next_idle_sweep = now + 1.0
                    self._close_idle_upstreams(now)
            except Exception:
                log.exception("tick failed")
            metrics.local.flush()
            self.flush_log()
            if self.tracer is not None:
                self.tracer.flush()  # sampled requests' spans to the SDK's batch processor

    def _close_idle_upstreams(self, now: float) -> None:
        """Close pooled connections idle longer than GATEWAY_UPSTREAM_IDLE_TIMEOUT, which is kept
        below the services' keep-alive (gunicorn keepalive = 75 s): the gateway closes first and
        never writes a request into a socket the server is closing."""
        limit = now - self.settings.upstream_idle_timeout
        for cl in self.clusters.values():
            for rep in cl.replicas:
                idle = rep.idle
                if idle and idle[0].idle_since < limit:  # oldest first: the list is in release order
                    keep = [c for c in idle if c.idle_since >= limit]
                    for c in idle:
                        if c.idle_since < limit:
                            c.close()
                    rep.idle = keep

    async def _check_all(self) -> None:
        checks = [cl.health_check(r) for cl in list(self.clusters.values()) for r in cl.replicas]
        if checks:
            await asyncio.gather(*checks, return_exceptions=True)

    async def _resolve_all(self) -> None:
        for cl in list(self.clusters.values()):
            try:
                await cl.resolve(self.loop)
            except Exception:
                log.exception("resolving %s failed", cl.name)

    async def _every(self, interval_of, fn) -> None:
        while not self.stopping.is_set():
            await fn()
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=interval_of())
            except TimeoutError:
                pass

    def start_background(self) -> list:
        loop = self.loop
        tasks = [
            loop.create_task(self.tick_loop()),
            loop.create_task(self._every(lambda: self.settings.dns_interval, self._resolve_all)),
            loop.create_task(self._every(lambda: self.settings.health_interval, self._check_all)),
            loop.create_task(self.verifier.run(self.stopping)),
        ]
        if self.limiter is not None:
            self.limiter.connect_soon()
        if self.revocation is not None:
            self.revocation.connect_soon()
        return tasks


def _new_loop():
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def run_worker(settings: config.Settings, *, serve_admin: bool, reuse_port: bool) -> int:
    loop = _new_loop()
    gw = Gateway(settings, loop)
    loop.run_until_complete(gw._resolve_all())
    server = loop.run_until_complete(
        loop.create_server(
            lambda: ClientConn(gw), settings.host, settings.port, reuse_port=reuse_port or None, reuse_address=True, backlog=4096
        )
    )
    admin_server = None
    if serve_admin:

        def ready():
            return (False, "draining") if gw.draining else (True, "serving")

        admin_server = loop.run_until_complete(admin.serve(loop, settings.admin_host, settings.admin_port, ready))
    tasks = gw.start_background()
    # what is alive now lives as long as the process: out of the collector's full collections
    # (~30 000 objects, ~8 ms with the event loop stopped), as in the services' gunicorn workers
    gc.collect()
    gc.freeze()
    done = asyncio.Event()

    async def drain():
        s = gw.settings
        log.info("SIGTERM: draining (readiness fails now, stop accepting in %.1fs)", s.drain_delay)
        metrics.DRAINING.set(1)
        gw.flush_log()
        await asyncio.sleep(s.drain_delay)
        server.close()
        for c in list(gw.conns):
            c.drain()
        deadline = time.monotonic() + s.drain_timeout
        while gw.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if gw.conns:
            log.warning("drain timeout: closing %d connections", len(gw.conns))
            for c in list(gw.conns):
                c.transport.abort()
        done.set()

    def on_term():
        if not gw.draining:
            gw.draining = True
            loop.create_task(drain())

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_signal_handler(signal.SIGHUP, gw.reload)
    metrics.PROXY_COMPILED.set(1 if proxy.COMPILED else 0)
    log.info(
        "gateway listening on http://%s:%d (admin %s, pid %d, data path %s)",
        settings.host,
        settings.port,
        f"http://{settings.admin_host}:{settings.admin_port}" if serve_admin else "in master",
        os.getpid(),
        PROXY_MODE,
    )
    if not proxy.COMPILED and os.environ.get("GATEWAY_PURE_PYTHON") != "1":
        log.warning("data path runs as plain Python (%s): several times the CPU per request", PROXY_MODE)
    try:
        loop.run_until_complete(done.wait())
    finally:
        gw.stopping.set()
        metrics.local.flush()
        gw.flush_log()
        if gw.tracer is not None:
            gw.tracer.shutdown()
        # the background loops end at `stopping`; one in the middle of a DNS lookup or a health check
        # gets a second to finish it: a getaddrinfo that uvloop runs in its thread pool completes
        # even when its task is cancelled, and then logged "Event loop is closed" at every stop
        _, unfinished = loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        for t in unfinished:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        if admin_server is not None:
            admin_server.close()
        if gw.limiter is not None:
            gw.limiter.close()
        if gw.revocation is not None:
            gw.revocation.close()
        for cl in gw.clusters.values():
            cl.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    log.info("gateway stopped")
    return 0


def run_master(settings: config.Settings) -> int:
    """GATEWAY_WORKERS > 1: N worker processes share the port (SO_REUSEPORT); this process serves
    the admin port (metrics aggregated over workers), forwards signals and restarts dead workers."""
    loop = _new_loop()
    children: dict[int, subprocess.Popen] = {}
    state = {"draining": False}

    def spawn():
        p = subprocess.Popen([sys.executable, "-m", "gateway", "--worker"], env=dict(os.environ))
        children[p.pid] = p

    for _ in range(settings.workers):
        spawn()

    def ready():
        if state["draining"]:
            return False, "draining"
        alive = sum(1 for p in children.values() if p.poll() is None)
        return (alive > 0, f"{alive}/{settings.workers} workers")

    admin_server = loop.run_until_complete(admin.serve(loop, settings.admin_host, settings.admin_port, ready))
    done = asyncio.Event()

    def forward(sig):
        for p in children.values():
            if p.poll() is None:
                p.send_signal(sig)

    def on_term():
        if not state["draining"]:
            state["draining"] = True
            log.info("SIGTERM: draining %d workers", len(children))
            forward(signal.SIGTERM)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_signal_handler(signal.SIGHUP, lambda: forward(signal.SIGHUP))

    async def supervise():
        while True:
            await asyncio.sleep(0.2)
            for pid, p in list(children.items()):
                if p.poll() is not None:
                    del children[pid]
                    metrics.mark_process_dead(pid)
                    if not state["draining"]:
                        log.error("worker %d exited with %s; restarting", pid, p.returncode)
                        spawn()
            if state["draining"] and not children:
                done.set()
                return

    loop.create_task(supervise())
    try:
        loop.run_until_complete(done.wait())
    finally:
        admin_server.close()
        for p in children.values():
            p.kill()
            p.wait()
        loop.close()
    return 0
