"""The data path: client connections (asyncio.Protocol + httptools request parser) proxied to
pooled keep-alive upstream connections (asyncio.Protocol + httptools response parser).

Why this shape: docs/gateway.md#the-http-stack-decision-and-measurements. Everything on the hot path is a plain callback; no
task, no coroutine and no dict is created per request on the common path (one small object per
request holds its state). Timeouts are enforced by one periodic sweep per process instead of a
timer per request.

Types: ClientConn is a client connection (parsing, limits while parsing, pipelining, write
buffer, flow control, deadlines); Req is one request and its cycle (route, auth, limits,
dispatch, relay of the answer, its record); UpstreamConn is a pooled connection to a replica;
GatewayBase is the per-process state they read.

Compiled with Cython together with wire.py, metrics.py, auth.py and upstream.py (pure-Python
mode: `python gateway/build_ext.py`, run by `make`): the classes become extension types (C struct
fields, direct C calls between methods, C calls into what is cimported from wire, metrics, auth
and upstream: the rules live there, once); the same code runs as plain Python when it is not
compiled (`COMPILED` says which one runs; GATEWAY_PURE_PYTHON=1 forces the sources). Layout and
rules: docs/gateway.md#code-layout; measurements: docs/gateway.md#compiled-data-path-cython.

Request flow: parse (ClientConn) -> Req.run: route -> body limit -> auth (cached token) -> rate
limit (a lease of Redis tokens, ratelimit.py) -> Req.dispatch: pick replica (P2C) -> pooled connection -> stream request
-> Req.upstream_*: stream response.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import json
import logging
import re
import socket
import time
from urllib.parse import unquote

import cython
import httptools
from cython.cimports.gateway.auth import Identity, Verifier
from cython.cimports.gateway.metrics import Local
from cython.cimports.gateway.upstream import Cluster, Replica
from cython.cimports.gateway.wire import RequestIds, TraceIds, rand64, scan_request, scan_response

from . import auth, metrics, problems
from .upstream import IDEMPOTENT, replayable
from .wire import (
    B_GET,
    CLEN_RE,
    H_ACRM,
    H_AUTHZ,
    H_CLEN,
    H_CONN,
    H_DROP,
    H_EXPECT,
    H_HOST,
    H_ORIGIN,
    H_RID,
    H_TE,
    H_TP,
    H_TS,
    H_XFF,
    H_XFP,
    RESP_STRIP_RE,
    SPECIAL,
)

log = logging.getLogger("gateway.proxy")
COMPILED: bool = cython.compiled
_monotonic = time.monotonic
_time = time.time
_time_ns = time.time_ns
_LOCAL = cython.declare(Local, metrics.local)  # per-process request counts and latencies

# the access log: one JSON line per request with these fields (Req._record): the log schema's
# (gateway/logs.py; trace_id and span_id when tracing is on), then the request's
ACCESS_FIELDS = (
    "ts",
    "level",
    "logger",
    "service",
    "pid",
    "request_id",
    "msg",
    "method",
    "path",
    "route",
    "status",
    "upstream",
    "duration_ms",
    "user",
    "client",
    "tries",
)
DRAIN_IDLE_GRACE = 0.3  # seconds an idle connection may still send a request after a SIGTERM's drain starts
SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# Below the services' gunicorn limits (shared/gunicorn_conf.py: limit_request_line 8190,
# limit_request_fields 150, limit_request_field_size 16384), with room for the headers the gateway
# adds, so an oversized request is refused here with problem+json, never by gunicorn with HTML.
MAX_HEADER_BYTES = 32 * 1024
MAX_URL = 8000
MAX_HEADER_FIELDS = 100
MAX_FIELD_SIZE = 8190

RESP_NONE, RESP_RAW, RESP_CHUNKED, RESP_CLOSE, RESP_BUFFER = 0, 1, 2, 3, 4
# An HTTP/1.0 client cannot read chunked framing: an upstream body without a length is collected
# and sent with a Content-Length (keep-alive works), up to this size; beyond, close-delimited.
MAX_BUFFERED_RESPONSE = 8 << 20


@cython.cclass
class GatewayBase:
    """The per-process state of the data path, declared in one place: every field the data path
    reads, and the lookups it makes on it (C fields and C-compiled methods when compiled).
    server.Gateway subclasses it, fills the fields from the configuration (apply()) and adds the
    background work; it adds no state the data path reads."""

    loop = cython.declare(object, visibility="public")  # the worker's event loop
    settings = cython.declare(object, visibility="public")  # config.Settings in force
    conns = cython.declare(set, visibility="public")  # open ClientConns
    routes = cython.declare(list, visibility="public")  # config.Route, in match order
    route_cache = cython.declare(dict, visibility="public")  # (method, path) -> Route | False
    blocked_re = cython.declare(object, visibility="public")  # paths never routed (404)
    clusters = cython.declare(dict, visibility="public")  # service -> upstream.Cluster
    orphans = cython.declare(dict, visibility="public")  # clusters removed by a reload, for requests in flight
    draining = cython.declare(cython.bint, visibility="public")
    access_log = cython.declare(cython.bint, visibility="public")
    log_buf = cython.declare(list, visibility="public")  # access-log lines not yet written
    max_tries = cython.declare(cython.int, visibility="public")
    retry_tokens = cython.declare(cython.double, visibility="public")
    retry_cap = cython.declare(cython.double, visibility="public")
    retry_per_request = cython.declare(cython.double, visibility="public")
    pool_size = cython.declare(cython.Py_ssize_t, visibility="public")  # settings.pool_size
    keepalive_timeout = cython.declare(cython.double, visibility="public")  # settings.keepalive_timeout
    max_body_any = cython.declare(object, visibility="public")  # the largest body any route accepts
    trusted = cython.declare(object, visibility="public")  # trusted proxy networks (X-Forwarded-For)
    trusted_cache = cython.declare(dict, visibility="public")  # ip -> trusted?
    verifier = cython.declare(Verifier, visibility="public")
    limiter = cython.declare(object, visibility="public")  # ratelimit.RedisLimiter | None
    revocation = cython.declare(object, visibility="public")  # ratelimit.RedisLimiter for the revocation set | None
    revocation_ttl = cython.declare(cython.double, visibility="public")  # s a "not revoked" answer is reused
    cors = cython.declare(object, visibility="public")  # allowed Origin (bytes) -> CORS response headers | None (off)
    cors_preflight = cython.declare(bytes, visibility="public")  # a preflight answer's Allow-Headers and Max-Age
    rl_prefix = cython.declare(bytes, visibility="public")  # rate-limit keys' prefix
    bucket_args = cython.declare(dict, visibility="public")  # config.Bucket -> the limiter's script arguments
    rids = cython.declare(RequestIds, visibility="public")  # X-Request-ID values
    tracer = cython.declare(object, visibility="public")  # tracing.Tracer | None (tracing off)
    tids = cython.declare(TraceIds, visibility="public")  # traceparent header lines (tracing on)
    trace_bound = cython.declare(cython.ulonglong, visibility="public")  # sampled if the trace id's low 64 bits < this
    access_head = cython.declare(str, visibility="public")  # the access log's level/logger/service/pid fields

    def match(self, path: str, method: str):
        """The route for a path: the first in the table whose prefix and methods match."""
        for r in self.routes:
            p = r.prefix
            if not path.startswith(p):
                continue
            if r.methods is not None and method not in r.methods:
                continue
            if r.exact:
                if len(path) == len(p):
                    return r
                continue
            if len(path) == len(p) or p[-1] == "/" or path[len(p)] == "/":
                return r
        return None

    def is_trusted(self, ip: str) -> bool:
        v = self.trusted_cache.get(ip)
        if v is None:
            v = False
            if self.trusted:
                try:
                    addr = ipaddress.ip_address(ip)
                    v = any(addr in net for net in self.trusted)
                except ValueError:
                    v = False
            if len(self.trusted_cache) > 10000:
                self.trusted_cache.clear()
            self.trusted_cache[ip] = v
        return v

    def retry_take(self) -> bool:
        if self.retry_tokens >= 1.0:
            self.retry_tokens -= 1.0
            return True
        return False

    def cluster_of(self, replica: Replica) -> Cluster:
        """The replica's cluster, also after a reload removed it (requests still in flight)."""
        c = self.clusters.get(replica.service)
        if c is None:
            c = self.orphans.get(replica.service)
            if c is None:
                c = self.orphans[replica.service] = Cluster(replica.service, [], self.settings)
        return c


_log_ts = cython.declare(cython.longlong, -1)  # access log: the last millisecond formatted ...
_log_ts_str = cython.declare(str, "")  # ... and its text


@cython.cfunc
def _release(gw: GatewayBase, conn: UpstreamConn):
    """A finished exchange's upstream connection back to its replica's pool (or closed)."""
    rep: Replica = conn.replica
    idle: list = rep.idle
    if conn.closed or rep.removed or gw.draining or len(idle) >= gw.pool_size:
        conn.close()
    else:
        conn.client = None
        conn.req = None
        conn.idle_since = _monotonic()
        idle.append(conn)


@cython.final
@cython.freelist(64)  # compiled: freed Req structs are reused, no malloc/free per request
@cython.cclass
class Req:
    """One request and its cycle: the request's job. ClientConn parses it and calls run(); from
    there Req routes it, checks the token, the revocation set and the rate limits, picks a replica
    and sends it (dispatch), relays the upstream's answer (the upstream_* events UpstreamConn
    calls) and records it (access log, metrics, span). It writes through its ClientConn (`client`)
    and hands the connection back with ClientConn.answered(). Compiled, a C struct (fields
    declared below, public so that untyped code can read them too) whose methods call each other
    in C."""

    client = cython.declare(object, visibility="public")  # the ClientConn it came on
    url = cython.declare(bytes, visibility="public")
    body = cython.declare(object, visibility="public")  # list of body chunks, kept for replays (bounded)
    body_len = cython.declare(cython.Py_ssize_t, visibility="public")
    clen = cython.declare(object, visibility="public")  # client Content-Length (int, -1 if none)
    chunked = cython.declare(cython.bint, visibility="public")
    complete = cython.declare(cython.bint, visibility="public")
    headers_done = cython.declare(cython.bint, visibility="public")
    route = cython.declare(object, visibility="public")
    ident = cython.declare(Identity, visibility="public")  # the verified token's (auth routes)
    replica = cython.declare(Replica, visibility="public")
    conn = cython.declare(object, visibility="public")
    tries = cython.declare(cython.int, visibility="public")
    tried = cython.declare(tuple, visibility="public")
    resp_started = cython.declare(cython.bint, visibility="public")
    resp_mode = cython.declare(cython.int, visibility="public")
    status = cython.declare(cython.int, visibility="public")
    rl_hdr = cython.declare(bytes, visibility="public")  # headers added to the upstream's answer (rate limit, CORS)
    cors_hdr = cython.declare(bytes, visibility="public")  # CORS headers for any answer to this request
    origin = cython.declare(object, visibility="public")
    acrm = cython.declare(object, visibility="public")  # a preflight's Access-Control-Request-Method
    rbuf = cython.declare(list, visibility="public")  # RESP_BUFFER: the head, then the body chunks
    rbuf_len = cython.declare(cython.Py_ssize_t, visibility="public")
    head = cython.declare(bytes, visibility="public")
    discard = cython.declare(cython.bint, visibility="public")
    sent = cython.declare(cython.bint, visibility="public")
    counted = cython.declare(cython.bint, visibility="public")
    queued = cython.declare(cython.bint, visibility="public")  # waiting for a replica below max_outstanding
    queue_deadline = cython.declare(cython.double, visibility="public")
    held = cython.declare(cython.bint, visibility="public")  # response head buffered, not yet sent
    host = cython.declare(object, visibility="public")
    rid = cython.declare(bytes, visibility="public")
    authz = cython.declare(object, visibility="public")
    expect = cython.declare(cython.bint, visibility="public")
    await_body = cython.declare(cython.bint, visibility="public")  # checks passed, chunked body still coming
    xff_in = cython.declare(object, visibility="public")
    proto_in = cython.declare(object, visibility="public")
    path = cython.declare(str, visibility="public")
    method = cython.declare(str, visibility="public")
    client_ip = cython.declare(object, visibility="public")
    hop = cython.declare(object, visibility="public")
    keep_alive = cython.declare(cython.bint, visibility="public")
    http11 = cython.declare(cython.bint, visibility="public")
    mbytes = cython.declare(bytes, visibility="public")
    fwd = cython.declare(bytes, visibility="public")
    headers = cython.declare(object, visibility="public")
    start = cython.declare(cython.double, visibility="public")
    tp_in = cython.declare(object, visibility="public")  # the client's traceparent / tracestate (bytes | None)
    ts_in = cython.declare(object, visibility="public")
    trace_hdr = cython.declare(object, visibility="public")  # trace headers forwarded (bytes; None: not decided)
    sampled = cython.declare(cython.bint, visibility="public")  # the gateway's span is recorded
    parent = cython.declare(object, visibility="public")  # a trusted proxy's span id (str) or None

    def __init__(self, now: float, client):
        # every field, in both modes (compiled, a new struct would start as None / 0 / False)
        self.client = client
        self.start = now
        self.url = b""
        self.body = None
        self.body_len = 0
        self.clen = -1
        self.chunked = False
        self.complete = False
        self.headers_done = False
        self.route = None
        self.ident = None
        self.replica = None
        self.conn = None
        self.tries = 0
        self.tried = ()
        self.resp_started = False
        self.resp_mode = 0  # RESP_NONE
        self.status = 0
        self.rl_hdr = b""
        self.cors_hdr = b""
        self.origin = None
        self.acrm = None
        self.rbuf = None
        self.rbuf_len = 0
        self.head = None
        self.discard = False
        self.sent = False
        self.counted = False
        self.queued = False
        self.queue_deadline = 0.0
        self.held = False
        self.host = None
        self.rid = None
        self.authz = None
        self.expect = False
        self.await_body = False
        self.xff_in = None
        self.proto_in = None
        self.path = ""
        self.method = "-"
        self.client_ip = None
        self.hop = None
        self.keep_alive = False
        self.http11 = True
        self.mbytes = b"GET"
        self.fwd = b""
        self.headers = []
        self.tp_in = None
        self.ts_in = None
        self.trace_hdr = None
        self.sampled = False
        self.parent = None

    @cython.ccall
    def run(self):
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        if gw.cors is not None:  # CORS configured: every answer varies by Origin
            hdr = gw.cors.get(self.origin.lower()) if self.origin is not None else None
            self.cors_hdr = hdr if hdr is not None else b"Vary: Origin\r\n"
            self.rl_hdr = self.cors_hdr
        url = self.url
        if not url.startswith(b"/"):
            return self.error(400, "request target must be an absolute path")
        q = url.find(b"?")
        raw_path = url if q < 0 else url[:q]
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            return self.error(400, "request path must be ASCII (percent-encode the rest)")
        self.path = path
        check = path
        if "%" in path or "/." in path or "//" in path or "\\" in path:
            check = unquote(path)
            if "\\" in check or "\x00" in check or _dot_segment(check):
                return self.error(400, "path must not contain dot segments or backslashes")
            check = re.sub(r"/{2,}", "/", check)
        # blocked check + longest-prefix match, cached per (method, path); the cache is replaced
        # on every configuration (re)load and cleared when it grows past 4096 entries
        key = (self.method, check)
        route = gw.route_cache.get(key)
        if route is None:
            route = False if gw.blocked_re.match(check) else (gw.match(check, self.method) or False)
            if len(gw.route_cache) >= 4096:
                gw.route_cache.clear()
            gw.route_cache[key] = route
        if route is False:
            return self.error(404, "no route for this path")
        self.route = route
        if self.acrm is not None and self.method == "OPTIONS" and self.origin is not None and gw.cors is not None:
            return self._preflight(check)
        if self.clen > route.max_body or self.body_len > route.max_body:
            return self.error(413, f"request body larger than {route.max_body} bytes", close=True)
        if self.chunked and not self.complete:
            # checks first: the chunked body is not read (beyond what already arrived) until the
            # token and the rate limits have passed (dispatch resumes reading)
            client.pause_reading(4)
        if route.auth:
            authz = self.authz
            if authz is None or len(authz) < 8 or authz[:7].lower() != b"bearer ":
                return self._unauthorized("missing bearer token")
            try:
                token = authz[7:].strip().decode("ascii")
            except UnicodeDecodeError:
                return self._unauthorized("malformed token")
            status, value = gw.verifier.check(token)
            if status == auth.FETCH:
                fut = gw.verifier.refresh()
                fut.add_done_callback(functools.partial(self._after_refetch, token))
                return
            if status == auth.FAIL:
                return self._unauthorized(value)
            self.ident = value
            if gw.revocation is not None:
                return self._check_revoked()
        self._limit()

    def _after_refetch(self, token: str, _fut=None):
        client: ClientConn = self.client
        if self is not client.active or client.closed:
            return
        status, value = client.gw.verifier.check(token)
        if status != auth.OK:
            return self._unauthorized(value if status == auth.FAIL else "unknown signing key")
        self.ident = value
        if client.gw.revocation is not None:
            return self._check_revoked()
        self._limit()

    @cython.ccall
    def _check_revoked(self):
        """The token's user or session in the revocation set? The answer is kept on the token's
        cached Identity: "revoked" for good, "not revoked" for revocation_ttl s; a lookup is one
        pipelined EXISTS (fails open: Redis away or slow, the token passes)."""
        client: ClientConn = self.client
        ident = self.ident
        if ident.revoked:
            metrics.REVOKED.inc()
            return self._unauthorized("token revoked")
        if ident.rev_until > self.start:
            return self._limit()
        client.gw.revocation.call(ident.revoked_check, Req._revocation_answer, self)

    def _revocation_answer(self, found):
        client: ClientConn = self.client
        ident = self.ident
        if found is None or isinstance(found, Exception):  # Redis failed: fail open, ask again later
            ident.rev_until = _monotonic() + client.gw.revocation_ttl
        elif found:
            ident.revoked = True
        else:
            ident.rev_until = _monotonic() + client.gw.revocation_ttl
        if self is not client.active or client.closed:
            return
        if ident.revoked:
            metrics.REVOKED.inc()
            return self._unauthorized("token revoked")
        self._limit()

    @cython.ccall
    def _limit(self):
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        rl = self.route.ratelimit
        if rl is None or gw.limiter is None:
            return self.dispatch()
        keys, args = [], []
        if rl.ip is not None:
            keys.append(b"%s%s:ip:%s" % (gw.rl_prefix, rl.name.encode(), self.client_ip.encode()))
            args += gw.bucket_args[rl.ip]
        if rl.user is not None and self.ident is not None:
            keys.append(b"%s%s:u:%s" % (gw.rl_prefix, rl.name.encode(), self.ident.sub.encode()))
            args += gw.bucket_args[rl.user]
        if not keys:
            return self.dispatch()
        gw.limiter.check(keys, args, Req._limited, self)

    def _limited(self, res):
        client: ClientConn = self.client
        if self is not client.active or client.closed:
            return
        if res is None:  # Redis unavailable: fail open (logged by the limiter)
            return self.dispatch()
        try:
            allowed, limit, remaining, reset, retry_ms, denied = res
        except (TypeError, ValueError):
            return self.dispatch()
        hdr = b"RateLimit-Limit: %d\r\nRateLimit-Remaining: %d\r\nRateLimit-Reset: %d\r\n" % (limit, max(0, remaining), reset)
        if not allowed:
            rl = self.route.ratelimit
            scope = "ip" if (denied == 1 and rl.ip is not None) else "user"
            metrics.RATELIMITED.labels(self.route.label, scope).inc()
            retry_after = max(1, -(-retry_ms // 1000))
            return self.error(
                429,
                f"rate limit exceeded ({scope}); retry in {retry_after}s",
                extra=hdr + b"Retry-After: %d\r\n" % retry_after,
            )
        self.rl_hdr = hdr + self.cors_hdr if self.cors_hdr else hdr
        self.dispatch()

    @cython.ccall
    def dispatch(self):
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        if not self.complete and not self.tries:
            # the checks passed: now the body may come (it was not read, nor invited, before)
            if self.expect:
                self.expect = False
                client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if self.chunked:  # collected first (sent upstream with a Content-Length): on_message_complete
                self.await_body = True
                client.resume_reading(4)
                return
        cluster: Cluster = gw.clusters.get(self.route.service)
        rep: Replica
        if cluster is None or not cluster.replicas:
            return self.error(503, f"no replicas available for service {self.route.service}")
        rep = cluster.pick(self.tried)
        if rep is None:
            return self.error(502 if self.tries else 503, f"no replica of {self.route.service} could serve the request")
        limit: cython.Py_ssize_t = cluster.max_outstanding
        if limit and rep.outstanding >= limit:
            rep = cluster.pick_free(self.tried)
            if rep is None:  # every replica is at its limit: wait for the first free slot
                return self._wait(cluster)
        self.replica = rep
        self.tried += (rep,)
        if not self.tries:  # retry budget: each request earns GATEWAY_RETRY_BUDGET of a retry
            t = gw.retry_tokens
            cap = gw.retry_cap
            if t != cap:  # at the cap (the usual state) there is nothing to add
                t += gw.retry_per_request
                gw.retry_tokens = t if t < cap else cap
        self.tries += 1
        rep.outstanding += 1
        self.counted = True
        idle: list = rep.idle
        conn: UpstreamConn
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return self._send(conn)
        client.up_deadline = 0.0
        gw.loop.create_task(self._connect(rep, cluster))

    @cython.ccall
    def _wait(self, cluster: Cluster):
        client: ClientConn = self.client
        if self.queue_deadline == 0.0:  # first time (a request can go back to the end: Cluster.wake)
            if len(cluster.waiting) >= cluster.max_queue:
                metrics.QUEUE_REJECTED.labels(cluster.name, "full").inc()
                return self.error(
                    503,
                    f"every replica of {self.route.service} is busy and {cluster.max_queue} requests are already waiting",
                    extra=b"Retry-After: 1\r\n",
                )
            self.queue_deadline = time.monotonic() + cluster.queue_timeout
            cluster.m_queued.inc()
        self.queued = True
        cluster.waiting.append(self)
        client.up_deadline = self.queue_deadline

    @cython.ccall
    def _unqueue(self):
        client: ClientConn = self.client
        self.queued = False
        gw: GatewayBase = client.gw
        cluster = gw.clusters.get(self.route.service)
        if cluster is not None:
            cluster.unqueue(self)

    async def _connect(self, rep: Replica, cluster: Cluster):
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        try:
            _, conn = await asyncio.wait_for(
                gw.loop.create_connection(functools.partial(UpstreamConn, rep, gw), rep.host, rep.port),
                gw.settings.connect_timeout,
            )
            if conn.closed:
                # connected, then lost before this coroutine resumed (a replica that died with the
                # connection in its accept queue resets it): nothing was sent, a failed connect
                raise ConnectionResetError("connection reset before the request was sent")
        except (TimeoutError, OSError) as exc:
            self._unbind()
            cluster.failure(rep, "connect")
            if self is not client.active or client.closed:
                return
            if self._may_retry(cluster):  # nothing was sent: safe for any method
                return self._retry(cluster, "connect")
            timeout = isinstance(exc, asyncio.TimeoutError)
            return self.error(
                504 if timeout else 502, f"could not connect to {self.route.service}" + (" in time" if timeout else "")
            )
        if self is not client.active or client.closed:
            # the client went away while connecting: close, do not pool a connection that never
            # carried a request (gunicorn's gthread worker holds a thread on a new connection
            # until its first request arrives, up to 5 s)
            self._unbind()
            conn.close()
            return
        self._send(conn)

    @cython.ccall
    def _send(self, conn: UpstreamConn):
        client: ClientConn = self.client
        conn.client = client
        conn.req = self
        conn.want_head = True
        conn.hbuf = b""
        conn.got_bytes = False
        self.conn = conn
        head = self.head
        if head is None:
            head = self._build_head()
        t = conn.transport
        if self.body:
            t.writelines([head, *self.body])
        else:
            t.write(head)
        self.sent = True
        client.up_deadline = time.monotonic() + self.route.timeout
        if client.write_paused:
            t.pause_reading()

    @cython.ccall
    def _build_head(self) -> bytes:
        client: ClientConn = self.client
        if client.peer_trusted and (self.xff_in or self.proto_in):
            peer = client.peer_b
            xff = self.xff_in + b", " + peer if self.xff_in else peer
            proto = self.proto_in if self.proto_in in (b"http", b"https") else b"http"
            tail = (
                b"\r\nX-Forwarded-For: "
                + xff
                + b"\r\nX-Forwarded-Proto: "
                + proto
                + b"\r\nX-Client-IP: "
                + self.client_ip.encode()
                + b"\r\n"
            )
        else:
            tail = client.fwd_tail  # the common case, the same for every request on this connection
        parts = [self.mbytes, b" ", self.url, b" HTTP/1.1\r\n", self.fwd, b"X-Request-ID: ", self.rid, tail]
        if self.trace_hdr is None:
            self._trace()
        if self.trace_hdr:
            parts.append(self.trace_hdr)
        if self.ident is not None:
            parts.append(self.ident.headers)
        if self.body_len or self.clen >= 0:
            parts.append(b"Content-Length: %d\r\n" % (self.clen if self.clen >= 0 else self.body_len))
        if self.host is None:
            parts.append(b"Host: %s\r\n" % self.route.service.encode())
        parts.append(b"\r\n")
        head = self.head = b"".join(parts)
        return head

    @cython.ccall
    def _trace(self):
        """The trace headers this request forwards (gateway/tracing.py). Tracing on: the gateway's
        own span, in a trusted proxy's trace or a new one; off: a trusted proxy's trace context as
        it came, anyone else's none."""
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        tracer = gw.tracer
        if tracer is None:
            if client.peer_trusted and self.tp_in is not None:
                self.trace_hdr = (
                    b"traceparent: " + self.tp_in + b"\r\n" + (b"tracestate: " + self.ts_in + b"\r\n" if self.ts_in else b"")
                )
            else:
                self.trace_hdr = b""
            return
        if client.peer_trusted and self.tp_in is not None and tracer.adopt(self):
            return
        sampled: cython.bint = rand64() < gw.trace_bound
        self.sampled = sampled
        self.trace_hdr = gw.tids.next(sampled)

    @cython.ccall
    def _span(self, hdr: bytes, upstream: str, dur: cython.double, addr: str) -> str:
        """A sampled request's span: one OTLP/JSON object (gateway/tracing.py exports them)."""
        end_ns: cython.longlong = _time_ns()
        start_ns: cython.longlong = end_ns - int(dur * 1e9)
        route = self.route
        path = self.path
        if not path or '"' in path or "\\" in path:
            path = json.dumps(self.path or self.url.decode("latin-1")[:200])[1:-1]
        name = self.method
        extra = ""  # the attributes a request may lack
        if route is not None:
            name = f"{self.method} {route.label}"
            extra = f',{{"key":"http.route","value":{{"stringValue":{route.label_json}}}}}'
        if self.host is not None:
            host = self.host.decode("latin-1")
            if ":" in host and not host.endswith("]"):
                host = host.rpartition(":")[0]
            if '"' in host or "\\" in host:
                host = json.dumps(host)[1:-1]
            extra += f',{{"key":"server.address","value":{{"stringValue":"{host}"}}}}'
        if self.tries > 1:
            extra += f',{{"key":"http.request.resend_count","value":{{"intValue":"{self.tries - 1}"}}}}'
        parent = f',"parentSpanId":"{self.parent}"' if self.parent is not None else ""
        status = ',"status":{"code":2}' if self.status >= 500 else ""
        tp: str = hdr[16:65].decode()  # "<trace id>-<span id>"
        return (
            f'{{"traceId":"{tp[:32]}","spanId":"{tp[33:]}"{parent},'
            f'"name":"{name}","kind":2,"startTimeUnixNano":"{start_ns}","endTimeUnixNano":"{end_ns}",'
            f'"attributes":[{{"key":"http.request.method","value":{{"stringValue":"{self.method}"}}}},'
            f'{{"key":"url.path","value":{{"stringValue":"{path}"}}}},'
            f'{{"key":"url.scheme","value":{{"stringValue":"http"}}}},'
            f'{{"key":"http.response.status_code","value":{{"intValue":"{self.status}"}}}},'
            f'{{"key":"client.address","value":{{"stringValue":"{addr}"}}}},'
            f'{{"key":"gateway.upstream","value":{{"stringValue":"{upstream}"}}}}{extra}]{status}}}'
        )

    @cython.ccall
    def _client_ip(self) -> str:
        client: ClientConn = self.client
        if client.peer_trusted and self.xff_in:
            hops = [h.strip().decode("latin-1") for h in self.xff_in.split(b",")]
            for hop in reversed(hops):
                if not hop:
                    continue
                try:
                    ipaddress.ip_address(hop)
                except ValueError:
                    return client.peer  # garbage in the chain: trust only what we saw
                if not client.gw.is_trusted(hop):
                    return hop
        return client.peer

    @cython.ccall
    def _may_retry(self, cluster: Cluster) -> bool:
        client: ClientConn = self.client
        # self.body keeps every chunk received (bounded by the body limit), so even a request whose
        # body is still arriving can be replayed: head + chunks so far, the rest streams on.
        if self.tries >= client.gw.max_tries or not cluster.has_alternative(self.tried):
            return False
        if client.gw.retry_take():
            return True
        metrics.RETRY_BUDGET_EXHAUSTED.labels(cluster.name).inc()
        return False

    @cython.ccall
    def _retry(self, cluster: Cluster, reason: str):
        metrics.RETRIES.labels(cluster.name, reason).inc()
        self.conn = None
        self.sent = False
        self.dispatch()

    @cython.ccall
    def _unbind(self):
        if self.counted:
            self.counted = False
            rep: Replica = self.replica
            rep.outstanding -= 1
            cluster: Cluster = rep.cluster
            if cluster is not None and cluster.waiting:  # a slot freed: the oldest waiting request takes it
                cluster.wake()

    # -- upstream events ---------------------------------------------------------------------------
    @cython.ccall
    def upstream_headers(self, conn: UpstreamConn, status: int):
        client: ClientConn = self.client
        if self is not client.active:
            return
        gw: GatewayBase = client.gw
        cluster: Cluster = gw.clusters.get(self.route.service) or gw.cluster_of(self.replica)
        if status >= 500:
            # the replica's own failure counts and is retried; one its dependencies caused is not
            if (
                cluster.failed_answer(self.replica, status, conn.head)
                and status in (502, 503, 504)
                and replayable(self.method, self.fwd)
                and self._may_retry(cluster)
            ):
                conn.close()  # drop the rest of this answer; the connection is not reused
                self._unbind()
                return self._retry(cluster, f"status_{status}")
        else:
            cluster.success(self.replica)
        self.status = status
        out = [conn.head, b"\r\nX-Request-ID: ", self.rid, b"\r\n"]
        clen = conn.clen
        if self.rl_hdr:
            out.append(self.rl_hdr)
        if self.method == "HEAD" or status in (204, 304):
            self.resp_mode = RESP_NONE
        elif clen:
            self.resp_mode = RESP_RAW
        elif self.http11:
            self.resp_mode = RESP_CHUNKED
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:  # HTTP/1.0 client, no length: collect the body, send it with a Content-Length
            self.resp_mode = RESP_BUFFER
            self.rbuf = [b"".join(out)]
            self.rbuf_len = 0
            self.resp_started = True
            self.held = True  # nothing reaches the client before the end: a lost replica is retried
            client.up_deadline = time.monotonic() + self.route.timeout
            return
        keep = self.keep_alive and not client.must_close and not gw.draining and self.resp_mode != RESP_CLOSE
        if not keep:
            client.must_close = True
            out.append(b"Connection: close\r\n\r\n")
        elif not self.http11:
            out.append(b"Connection: keep-alive\r\n\r\n")
        else:
            out.append(b"\r\n")
        client.wbuf.append(b"".join(out))
        self.resp_started = True
        # A head that came without any of its body stays here until the body starts: if the
        # replica dies in between, nothing has reached the client and an idempotent request
        # can still be retried (upstream_lost).
        self.held = (self.resp_mode == RESP_RAW or self.resp_mode == RESP_CHUNKED) and self.method in IDEMPOTENT
        client.up_deadline = time.monotonic() + self.route.timeout
        if self.method == "HEAD":
            # llhttp would wait for a body after a HEAD response: finish here, do not reuse
            conn.close()
            self.conn = None
            self._finish()

    @cython.ccall
    def upstream_whole(self, conn: UpstreamConn, status: cython.int, head: bytes, body: bytes):
        """A whole response in one read (UpstreamConn's fast path, wire.scan_response: never one
        that says Connection: close): one write to the client."""
        client: ClientConn = self.client
        if self is not client.active:
            conn.close()
            return
        gw: GatewayBase = client.gw
        rep: Replica = self.replica
        cluster: Cluster = gw.clusters.get(self.route.service) or gw.cluster_of(rep)
        if status >= 500:
            if (
                cluster.failed_answer(rep, status, head)
                and status in (502, 503, 504)
                and replayable(self.method, self.fwd)
                and self._may_retry(cluster)
            ):
                conn.close()
                self._unbind()
                return self._retry(cluster, f"status_{status}")
        else:
            cluster.success(rep)
        self.status = status
        self.resp_mode = RESP_RAW
        self.resp_started = True
        if not self.keep_alive or client.must_close or gw.draining:
            client.must_close = True
            end = b"Connection: close\r\n\r\n"
        elif not self.http11:
            end = b"Connection: keep-alive\r\n\r\n"
        else:
            end = b"\r\n"
        if client.wbuf:
            client.flush()
        if not client.closed:
            client.transport.write(b"".join((head, b"\r\nX-Request-ID: ", self.rid, b"\r\n", self.rl_hdr, end, body)))
        conn.client = None
        conn.req = None
        self.conn = None
        if self.complete:
            _release(gw, conn)
        else:
            conn.close()
        self._finish()

    @cython.ccall
    def _drop_held(self):
        """Forget a buffered response head that never reached the client."""
        client: ClientConn = self.client
        client.wbuf = []
        self.rbuf = None
        self.held = False
        self.resp_started = False
        self.status = 0
        self.resp_mode = 0

    @cython.ccall
    def upstream_body(self, data: bytes):
        client: ClientConn = self.client
        if self is not client.active or not self.resp_started:
            return
        mode = self.resp_mode
        if mode == RESP_BUFFER:
            self.rbuf.append(data)
            self.rbuf_len += len(data)
            if self.rbuf_len > MAX_BUFFERED_RESPONSE:  # too large to hold: close-delimited from here
                self.resp_mode = RESP_CLOSE
                self.held = False
                client.must_close = True
                buf = self.rbuf
                self.rbuf = None
                buf[0] += b"Connection: close\r\n\r\n"
                client.wbuf.extend(buf)
            client.up_deadline = time.monotonic() + self.route.timeout
            return
        self.held = False
        if mode == RESP_CHUNKED:
            client.wbuf.extend((b"%x\r\n" % len(data), data, b"\r\n"))
        elif mode != RESP_NONE:
            client.wbuf.append(data)
        client.up_deadline = time.monotonic() + self.route.timeout

    @cython.ccall
    def upstream_complete(self, conn: UpstreamConn):
        client: ClientConn = self.client
        if self is not client.active or not self.resp_started:
            return
        self.held = False
        if self.resp_mode == RESP_CHUNKED:
            client.wbuf.append(b"0\r\n\r\n")
        elif self.resp_mode == RESP_BUFFER:
            buf = self.rbuf
            self.rbuf = None
            self.resp_mode = RESP_RAW
            keep = self.keep_alive and not client.must_close and not client.gw.draining
            if not keep:
                client.must_close = True
            buf[0] += b"Content-Length: %d\r\n%s" % (
                self.rbuf_len,
                b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n",
            )
            client.wbuf.extend(buf)
        client.flush()
        conn.client = None
        conn.req = None
        self.conn = None
        if conn.parser.should_keep_alive() and self.complete:
            _release(client.gw, conn)
        else:
            conn.close()
        self._finish()

    @cython.ccall
    def upstream_lost(self, conn: UpstreamConn, why: str):
        client: ClientConn = self.client
        conn.req = None
        if self is not client.active:
            return
        self.conn = None
        if self.held:  # only the head arrived and it is still buffered: as if nothing came back
            self._drop_held()
        if self.resp_started:
            if self.resp_mode == RESP_CLOSE:  # close-delimited body: EOF is the end
                return self._finish()
            self._unbind()
            self.status = self.status or 502
            self._record(self.replica.addr)
            client.active = None
            client.closed = True
            client.transport.abort()  # truncated answer: the client must see a broken response
            return
        gw: GatewayBase = client.gw
        cluster: Cluster = gw.clusters.get(self.route.service) or gw.cluster_of(self.replica)
        self._unbind()
        cluster.failure(self.replica, "reset")
        # nothing came back: safe to replay for idempotent methods and requests with an Idempotency-Key
        if replayable(self.method, self.fwd) and self._may_retry(cluster):
            return self._retry(cluster, "reset")
        self.error(502, f"{self.route.service} closed the connection without answering")

    # -- answers -------------------------------------------------------------------------------
    @cython.ccall
    def _finish(self):
        client: ClientConn = self.client
        client.flush()
        self._unbind()
        self._record(self.replica.addr if self.replica is not None else "-")
        client.answered(self)

    def log_ids(self) -> dict:
        """The request's ids for a log line written while it is handled (an internal error): the
        request id, and the trace and span ids once the trace is decided (gateway/logs.py)."""
        ids = {"request_id": self.rid.decode() if self.rid else "-"}
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        hdr = self.trace_hdr
        if hdr and gw.tracer is not None:  # the gateway's own span (tracing off: no ids, as the access line)
            tp: str = hdr[16:65].decode()  # "<trace id>-<span id>"
            ids["trace_id"], ids["span_id"] = tp[:32], tp[33:]
        return ids

    @cython.ccall
    def _record(self, upstream: str):
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        dur: cython.double = _monotonic() - self.start
        route = self.route
        label = route.label if route is not None else "-"
        _LOCAL.observe(label, self.status, upstream, dur)  # request count, latency histogram
        addr = self.client_ip or client.peer
        hdr = self.trace_hdr
        if gw.tracer is not None:
            if hdr is None:  # answered by the gateway itself (404, 401, 429, 503 …): traced too
                self._trace()
                hdr = self.trace_hdr
            if self.sampled:
                gw.tracer.done.append(self._span(hdr, upstream, dur, addr))
        if gw.access_log:
            path = self.path
            if not path or '"' in path or "\\" in path:
                path = json.dumps(self.path or self.url.decode("latin-1")[:200])[1:-1]
            ident = self.ident
            user = ident.sub_json if ident is not None else "null"
            route_json = route.label_json if route is not None else '"-"'
            rid = self.rid.decode() if self.rid else "-"
            ids = ""
            if gw.tracer is not None:
                tp: str = hdr[16:65].decode()  # "<trace id>-<span id>"
                ids = f',"trace_id":"{tp[:32]}","span_id":"{tp[33:]}"'

            # one JSON line in the log schema every process writes (gateway/logs.py), then ACCESS_FIELDS;
            # ts to the ms, duration to 10 us, from integers (cheaper than float formatting)
            global _log_ts, _log_ts_str
            ts_ms: cython.double = _time() * 1000.0 + 0.5
            ts: cython.longlong = int(ts_ms)
            if ts != _log_ts:  # many requests share a millisecond: format it once
                _log_ts = ts
                _log_ts_str = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)) + f".{ts % 1000:03d}+00:00"
            d: cython.longlong = int(dur * 100000.0 + 0.5)
            gw.log_buf.append(
                f'{{"ts":"{_log_ts_str}",{gw.access_head},"request_id":"{rid}"{ids},"msg":"request",'
                f'"method":"{self.method}","path":"{path}","route":{route_json},'
                f'"status":{self.status},"upstream":"{upstream}","duration_ms":{d // 100}.{d % 100:02d},'
                f'"user":{user},"client":"{addr}","tries":{self.tries}}}\n'
            )

    @cython.ccall
    def _unauthorized(self, detail: str):
        metrics.AUTH_FAILURES.inc()
        return self.error(
            401,
            detail,
            extra=b'WWW-Authenticate: Bearer error="invalid_token", error_description="%s"\r\n'
            % detail.replace('"', "'").encode(),
        )

    def error(self, status: int, detail: str, *, extra: bytes = b"", close: bool = False):
        """Answer the active request with a problem+json (nothing was sent to the client yet)."""
        client: ClientConn = self.client
        if self.queued:
            self._unqueue()
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        if client.paused & 4:
            client.resume_reading(4)  # a refused chunked body is read and dropped (or the connection closes)
        self.status = status
        if close or status in (400, 408, 413, 414, 431) or client.gw.draining:
            client.must_close = True
        if not self.complete and not client.must_close:
            self.discard = True  # keep the connection: read and drop the rest of this body
        keep = self.keep_alive and not client.must_close
        if not keep:
            client.must_close = True
        if self.rid is None:
            self.rid = client.gw.rids.next()
        if self.cors_hdr:
            extra = extra + self.cors_hdr
        client.flush()
        client.transport.write(
            problems.response(
                status, detail, request_id=self.rid.decode(), keep_alive=keep, head=self.method == "HEAD", extra_headers=extra
            )
        )
        self.resp_started = True
        self._finish()

    def _preflight(self, path: str):
        """A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method), answered here
        without a token: 204 with the allowed methods and headers for an allowed origin; without
        any CORS header for another (the browser then refuses the actual request)."""
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        hdr = gw.cors.get(self.origin.lower())
        out = [b"HTTP/1.1 204 No Content\r\nX-Request-ID: ", self.rid, b"\r\n"]
        if hdr is not None:
            # the route the actual request will take (a route may be restricted to some methods)
            route = gw.match(path, self.acrm.decode("latin-1").strip().upper()) or self.route
            methods = route.methods
            allowed = ", ".join(sorted(methods)) if methods is not None else "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
            out += [
                b"Access-Control-Allow-Origin: ",
                self.origin,
                b"\r\nAccess-Control-Allow-Methods: ",
                allowed.encode(),
                b"\r\n",
                gw.cors_preflight,
            ]
        out.append(b"Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n")
        self.status = 204
        if not self.complete and not client.must_close:
            self.discard = True
        keep = self.keep_alive and not client.must_close and not gw.draining
        if not keep:
            client.must_close = True
        out.append(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
        client.flush()
        client.transport.write(b"".join(out))
        self.resp_started = True
        self._finish()

    # -- the connection's events that end this request -----------------------------------------
    @cython.ccall
    def client_gone(self):
        """The client closed its connection while this request was being answered."""
        conn: UpstreamConn = self.conn
        if conn is not None:
            conn.abort()  # response not finished: the connection cannot be reused
            self.conn = None
        if self.queued:
            self._unqueue()
        self._unbind()
        if self.status == 0:
            self.status = 499  # client went away before the answer (logged, nginx convention)
        self._record(self.replica.addr if self.replica is not None else "-")

    @cython.ccall
    def upstream_timeout(self):
        """The connection's upstream deadline passed (ClientConn.on_tick): waited too long for a
        free replica, or the replica did not answer (or stopped sending) in time."""
        client: ClientConn = self.client
        gw: GatewayBase = client.gw
        if self.queued:
            metrics.QUEUE_REJECTED.labels(self.route.service, "timeout").inc()
            return self.error(
                503, f"every replica of {self.route.service} stayed busy for the queue timeout", extra=b"Retry-After: 1\r\n"
            )
        if self.replica is not None:
            cluster: Cluster = gw.clusters.get(self.route.service) or gw.cluster_of(self.replica)
            cluster.failure(self.replica, "timeout")
        if self.held:
            self._drop_held()
        if self.resp_started:
            if self.conn is not None:
                self.conn.abort()
                self.conn = None
            self._unbind()
            self.status = self.status or 504
            self._record(self.replica.addr if self.replica is not None else "-")
            client.active = None
            client._close()
        else:
            self.error(504, f"{self.route.service} did not answer within {self.route.timeout:g}s", close=False)

    def from_queue(self):
        """Cluster.wake: a replica has a free slot for this waiting request."""
        client: ClientConn = self.client
        if client.closed or client.active is not self:
            return
        client.up_deadline = 0.0
        self.dispatch()


@cython.final
@cython.cclass
class UpstreamConn:
    """One keep-alive connection to a replica; serves one exchange at a time. An asyncio protocol
    by duck typing (an extension type cannot subclass asyncio.Protocol; loops only call methods)."""

    replica = cython.declare(Replica, visibility="public")
    gw = cython.declare(GatewayBase, visibility="public")
    transport = cython.declare(object, visibility="public")
    parser = cython.declare(object, visibility="public")
    client = cython.declare(object, visibility="public")  # the ClientConn being answered
    req = cython.declare(Req, visibility="public")
    closed = cython.declare(cython.bint, visibility="public")
    got_bytes = cython.declare(cython.bint, visibility="public")
    informational = cython.declare(cython.bint, visibility="public")
    clen = cython.declare(cython.bint, visibility="public")
    want_head = cython.declare(cython.bint, visibility="public")
    hbuf = cython.declare(bytes, visibility="public")
    head = cython.declare(bytes, visibility="public")
    idle_since = cython.declare(cython.double, visibility="public")

    def __init__(self, replica, gw):
        self.replica = replica
        self.gw = gw
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.client = None
        self.req = None
        self.closed = False
        self.got_bytes = False
        self.informational = False
        self.clen = False
        self.want_head = True
        self.hbuf = b""
        self.head = b""
        self.idle_since = 0.0

    # asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.replica.open_conns += 1
        metrics.UPSTREAM_CONNECTIONS.inc()

    def eof_received(self):
        return None  # the transport closes; connection_lost follows

    def data_received(self, data: bytes):
        self.got_bytes = True
        client: ClientConn = self.client
        if client is None:  # bytes on an idle pooled connection: protocol violation
            self.close()
            return
        req: Req
        end: cython.Py_ssize_t
        if self.want_head and not self.hbuf:
            req = self.req
            end = data.find(b"\r\n\r\n")
            if end > 0 and req is not None and req.method != "HEAD":
                scan = scan_response(data, end)  # None: not for the fast path, the parser decides
                if scan is not None and len(data) == end + 4 + scan[2]:
                    try:
                        req.upstream_whole(self, scan[0], scan[1], data[end + 4 :])
                    except Exception:
                        log.exception("error handling upstream data", extra=req.log_ids())
                        self.close()
                        req.upstream_lost(self, "internal error")
                    return
        if self.want_head:
            self.hbuf = self.hbuf + data if self.hbuf else data
        try:
            self.parser.feed_data(data)
            held = self.req
            if client.wbuf and (held is None or not held.held):
                client.flush()  # head and body of a response go out in one write
        except httptools.HttpParserError as exc:
            self._lost(f"bad response: {exc}")
        except Exception:
            log.exception("error handling upstream data", extra=self.req.log_ids() if self.req is not None else None)
            self._lost("internal error")

    def connection_lost(self, exc):
        if not self.closed:
            self.closed = True
        try:
            self.replica.idle.remove(self)
        except ValueError:
            pass
        self.replica.open_conns -= 1
        metrics.UPSTREAM_CONNECTIONS.dec()
        self._lost("connection closed")

    def pause_writing(self):
        client: ClientConn = self.client
        if client is not None:
            client.pause_reading(2)

    def resume_writing(self):
        client: ClientConn = self.client
        if client is not None:
            client.resume_reading(2)

    # httptools callbacks
    def on_headers_complete(self):
        status = self.parser.get_status_code()
        buf = self.hbuf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("response head without CRLF CRLF")
        if status < 200:  # 1xx: not forwarded, the final response follows
            self.informational = True
            self.hbuf = buf[end + 4 :]
            return
        head = buf[:end]
        self.hbuf = b""
        self.want_head = False
        if head[:9] != b"HTTP/1.1 ":
            head = b"HTTP/1.1 " + head[9:]
        self.clen = CLEN_RE.search(head) is not None
        self.head = RESP_STRIP_RE.sub(b"", head)
        req: Req = self.req
        if self.client is not None and req is not None:
            req.upstream_headers(self, status)

    def on_body(self, data: bytes):
        req: Req = self.req
        if self.client is not None and req is not None:
            req.upstream_body(data)

    def on_message_complete(self):
        if self.informational:
            self.informational = False
            return
        req: Req = self.req
        if self.client is not None and req is not None:
            req.upstream_complete(self)

    @cython.ccall
    def _lost(self, why: str):
        """This connection failed or closed: the request it carried (if any) hears why."""
        client = self.client
        req: Req = self.req
        self.close()
        if client is not None and req is not None:
            req.upstream_lost(self, why)

    @cython.ccall
    def close(self):
        self.closed = True
        self.client = None
        if self.transport is not None:
            self.transport.close()

    @cython.ccall
    def abort(self):
        self.closed = True
        self.client = None
        if self.transport is not None:
            self.transport.abort()


@cython.final
@cython.cclass
class ClientConn:
    """One client connection: the connection's job. It parses the byte stream (wire.scan_request's
    fast path, else httptools) into Req objects, answers them in order (pipelined ones wait in
    `queue`), owns the write buffer and flow control, enforces the read and upstream deadlines
    (on_tick) and closes. What happens to one request (route, auth, limits, dispatch, relay) is
    Req's job. An asyncio protocol by duck typing, like UpstreamConn."""

    gw = cython.declare(GatewayBase, visibility="public")
    transport = cython.declare(object, visibility="public")
    parser = cython.declare(object, visibility="public")
    req = cython.declare(Req, visibility="public")  # being parsed
    active = cython.declare(Req, visibility="public")  # being answered
    queue = cython.declare(object, visibility="public")
    read_deadline = cython.declare(cython.double, visibility="public")
    up_deadline = cython.declare(cython.double, visibility="public")  # set by the active Req (queue, upstream)
    closed = cython.declare(cython.bint, visibility="public")
    must_close = cython.declare(cython.bint, visibility="public")
    paused = cython.declare(cython.int, visibility="public")
    write_paused = cython.declare(cython.bint, visibility="public")
    wbuf = cython.declare(list, visibility="public")
    peer = cython.declare(str, visibility="public")
    peer_b = cython.declare(bytes, visibility="public")
    fwd_tail = cython.declare(bytes, visibility="public")
    peer_trusted = cython.declare(cython.bint, visibility="public")
    hdr_bytes = cython.declare(cython.Py_ssize_t, visibility="public")
    hdr_count = cython.declare(cython.Py_ssize_t, visibility="public")

    def __init__(self, gw):
        self.gw = gw
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.req = None
        self.active = None
        self.queue = collections.deque()
        self.read_deadline = 0.0
        self.up_deadline = 0.0
        self.closed = False
        self.must_close = False
        self.paused = 0
        self.write_paused = False
        self.wbuf = []
        self.peer = "-"
        self.peer_b = b"-"
        self.fwd_tail = b"\r\nX-Forwarded-For: -\r\nX-Forwarded-Proto: http\r\nX-Client-IP: -\r\n"
        self.peer_trusted = False
        self.hdr_bytes = 0
        self.hdr_count = 0

    # -- asyncio ------------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        gw: GatewayBase = self.gw
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.peer_b = self.peer.encode()
            # X-Client-IP: the one client address the services believe (shared/client_ip.py)
            self.fwd_tail = (
                b"\r\nX-Forwarded-For: " + self.peer_b + b"\r\nX-Forwarded-Proto: http\r\nX-Client-IP: " + self.peer_b + b"\r\n"
            )
            self.peer_trusted = gw.is_trusted(self.peer)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        gw.conns.add(self)
        metrics.OPEN_CONNECTIONS.inc()
        self.read_deadline = time.monotonic() + gw.settings.header_timeout

    def eof_received(self):
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc):
        self.closed = True
        self.gw.conns.discard(self)
        metrics.OPEN_CONNECTIONS.dec()
        r: Req = self.active
        if r is not None:
            r.client_gone()
            self.active = None

    def data_received(self, data: bytes):
        if self.closed or (self.must_close and self.active is None):
            return
        if self.req is None and self.active is None and len(data) <= MAX_URL and data.endswith(b"\r\n\r\n") and not self.queue:
            scan = scan_request(data)
            if scan is not None:
                try:
                    self._fast_request(scan)
                    return
                except _Reject as exc:
                    self._protocol_error(exc.status, exc.detail)
                    return
                except Exception:
                    log.exception("error handling client data", extra=self._log_ids())
                    self._protocol_error(500, "internal gateway error")
                    return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.must_close = True  # upgrades are not proxied; the parser cannot go on after one
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _Reject):
                self._protocol_error(cause.status, cause.detail)
            else:
                log.error("error in request callback", exc_info=cause, extra=self._log_ids())
                self._protocol_error(500, "internal gateway error")
        except httptools.HttpParserError as exc:
            self._protocol_error(400, f"malformed HTTP request: {exc}")
        except Exception:
            log.exception("error handling client data", extra=self._log_ids())
            self._protocol_error(500, "internal gateway error")

    def _log_ids(self) -> dict | None:
        """The ids of the request this connection is handling, for an error line (Req.log_ids)."""
        r = self.req if self.req is not None else self.active
        return r.log_ids() if r is not None else None

    def pause_writing(self):
        self.write_paused = True
        r: Req = self.active
        if r is not None and r.conn is not None and r.conn.transport is not None:
            r.conn.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        r: Req = self.active
        if r is not None and r.conn is not None and r.conn.transport is not None:
            r.conn.transport.resume_reading()

    @cython.ccall
    def pause_reading(self, reason: cython.int):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    @cython.ccall
    def resume_reading(self, reason: cython.int):
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    @cython.ccall
    def _fast_request(self, scan: tuple):
        """The common request, parsed by wire.scan_request (method, url, header block, Host,
        Authorization): its header block is forwarded verbatim."""
        r: Req = Req(_monotonic(), self)
        r.headers = None
        r.mbytes = mb = scan[0]
        r.method = "GET" if mb is B_GET else "HEAD"
        r.url = scan[1]
        r.fwd = scan[2]
        r.host = scan[3]
        r.authz = scan[4]
        r.origin = scan[5]
        r.keep_alive = True
        r.headers_done = True
        r.complete = True
        r.rid = self.gw.rids.next()
        r.client_ip = self.peer
        self.read_deadline = 0.0
        self.active = r
        r.run()
        return True

    # -- httptools ---------------------------------------------------------------------------
    def on_message_begin(self):
        now = time.monotonic()
        self.req = Req(now, self)
        self.hdr_bytes = 0
        self.hdr_count = 0
        self.read_deadline = now + self.gw.settings.header_timeout

    def on_url(self, url: bytes):
        r: Req = self.req
        r.url += url
        if len(r.url) > MAX_URL:
            raise _Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes):
        self.hdr_bytes += len(name) + len(value) + 4
        if self.hdr_bytes > MAX_HEADER_BYTES:
            raise _Reject(431, "request headers too large")
        r: Req = self.req
        if r.headers_done:
            return  # a trailer field (after a chunked body): never forwarded, never trusted
        self.hdr_count += 1
        if self.hdr_count > MAX_HEADER_FIELDS:
            raise _Reject(431, f"more than {MAX_HEADER_FIELDS} header fields")
        if len(name) + len(value) > MAX_FIELD_SIZE:
            raise _Reject(431, f"a header field longer than {MAX_FIELD_SIZE} bytes")
        ln = name.lower()
        kind = SPECIAL.get(ln)
        if kind is None:
            if ln[:11] != b"x-internal-":
                r.headers += (name, b": ", value, b"\r\n")
            return
        if kind == H_DROP:
            return
        if kind == H_AUTHZ:
            r.authz = value
            r.headers += (name, b": ", value, b"\r\n")
        elif kind == H_HOST:
            if r.host is not None:
                raise _Reject(400, "more than one Host header")
            r.host = value
            r.headers += (name, b": ", value, b"\r\n")
        elif kind == H_CLEN:
            try:
                r.clen = int(value)
            except ValueError:
                raise _Reject(400, "bad Content-Length") from None
        elif kind == H_TE:
            r.chunked = True
        elif kind == H_RID:
            if SANE_ID.fullmatch(value):
                r.rid = value
        elif kind == H_XFF:
            r.xff_in = value if r.xff_in is None else r.xff_in + b", " + value
            if len(r.xff_in) > MAX_FIELD_SIZE:
                raise _Reject(431, f"X-Forwarded-For longer than {MAX_FIELD_SIZE} bytes")
        elif kind == H_XFP:
            r.proto_in = value
        elif kind == H_EXPECT:
            if value.lower() == b"100-continue":
                r.expect = True
        elif kind == H_ORIGIN:
            r.origin = value
            r.headers += (name, b": ", value, b"\r\n")
        elif kind == H_ACRM:
            r.acrm = value
            r.headers += (name, b": ", value, b"\r\n")
        elif kind == H_TP:
            r.tp_in = value
        elif kind == H_TS:
            r.ts_in = value
        elif kind == H_CONN:
            for tok in value.lower().split(b","):
                tok = tok.strip()
                if tok and tok not in (b"close", b"keep-alive"):
                    if r.hop is None:
                        r.hop = set()
                    r.hop.add(tok)

    def on_headers_complete(self):
        r: Req = self.req
        p = self.parser
        gw: GatewayBase = self.gw
        r.mbytes = p.get_method()
        r.method = r.mbytes.decode("ascii", "replace")
        r.http11 = p.get_http_version() == "1.1"
        r.keep_alive = p.should_keep_alive()
        pieces = r.headers
        if r.hop:  # headers the client declared hop-by-hop in its Connection header
            kept = []
            for i in range(0, len(pieces), 4):
                if pieces[i].lower() not in r.hop:
                    kept += pieces[i : i + 4]
            pieces = kept
            if b"authorization" in r.hop:
                r.authz = None
        r.fwd = b"".join(pieces)
        if r.rid is None:
            r.rid = gw.rids.next()
        r.headers = None
        r.headers_done = True
        r.client_ip = r._client_ip()
        if r.clen > gw.max_body_any:
            raise _Reject(413, f"request body larger than {gw.max_body_any} bytes")
        if r.chunked or r.clen > 0:
            self.read_deadline = time.monotonic() + gw.settings.body_timeout
        if self.active is None and not self.queue and not self.closed:
            self.active = r  # the common case: nothing queued ahead of it
            r.run()
        else:
            self.queue.append(r)
            self._next()

    def on_body(self, data: bytes):
        r: Req = self.req
        if r.discard:
            self.read_deadline = time.monotonic() + self.gw.settings.body_timeout
            return
        r.body_len += len(data)
        limit = r.route.max_body if r.route is not None else self.gw.max_body_any
        if r.body_len > limit:
            raise _Reject(413, f"request body larger than {limit} bytes")
        if r.body is None:
            r.body = [data]
        else:
            r.body.append(data)
        if r.sent and r.conn is not None and r.conn.transport is not None:
            r.conn.transport.write(data)
        self.read_deadline = time.monotonic() + self.gw.settings.body_timeout

    def on_message_complete(self):
        r: Req = self.req
        self.req = None
        r.complete = True
        if r.discard:
            r.body = None
        if self.active is None and not self.queue:
            self.read_deadline = time.monotonic() + self.gw.keepalive_timeout
        else:
            self.read_deadline = 0.0
            if self.active is not None and self.queue:
                self.pause_reading(1)  # pipelined requests wait; do not buffer without bound
        if self.active is None and self.queue:
            self._next()
        elif r is self.active and r.await_body:
            r.await_body = False
            r.dispatch()

    # -- request processing ------------------------------------------------------------------------
    @cython.ccall
    def _next(self):
        while self.active is None and self.queue and not self.closed:
            r: Req = self.queue[0]
            self.queue.popleft()
            if not self.queue:
                self.resume_reading(1)
            self.active = r
            r.run()

    def _protocol_error(self, status: int, detail: str):
        """The byte stream cannot be parsed any further: answer if we can, then close."""
        if self.closed:
            return
        self.must_close = True
        r: Req = self.req
        if self.active is None:
            r = r or Req(time.monotonic(), self)
            if not r.headers_done:
                # not yet seen by Req.run: account it here
                r.rid = r.rid or self.gw.rids.next()
                if r.client_ip is None:
                    r.client_ip = self.peer
            self.active = r
            self.queue.clear()
            r.keep_alive = False
            r.error(status, detail)
        elif r is not None and self.active is r and not r.resp_started:
            # the request being answered is the one whose bytes broke (a body over the limit, a
            # bad chunk): nothing was sent to the client yet, so it gets the problem
            self.queue.clear()
            r.keep_alive = False
            r.error(status, detail)
        else:
            self._close()

    @cython.ccall
    def answered(self, r: Req):
        """The active request is answered (Req._finish): close, or go on with the next one."""
        self.active = None
        self.up_deadline = 0.0
        if self.must_close or self.gw.draining or (not r.complete and not r.discard):
            self._close()  # also when the rest of the body is unread: this connection is over
            return
        if self.queue:
            self._next()
        elif self.req is None:
            self.read_deadline = time.monotonic() + self.gw.keepalive_timeout

    @cython.ccall
    def flush(self):
        buf = self.wbuf
        if buf:
            self.wbuf = []
            if not self.closed:
                if len(buf) == 1:
                    self.transport.write(buf[0])
                else:
                    self.transport.writelines(buf)

    @cython.ccall
    def _close(self):
        self.flush()
        if not self.closed:
            self.closed = True
            self.transport.close()

    def on_tick(self, now: float):
        if self.read_deadline and now > self.read_deadline:
            self.read_deadline = 0.0
            if self.req is None and self.active is None and not self.queue:
                self._close()  # idle keep-alive connection
            elif self.active is not None:
                if self.active.resp_started:
                    self._close()
                else:
                    self.active.error(408, "request body not received in time", close=True)
            else:
                self._protocol_error(408, "request not received in time")
        if self.up_deadline and now > self.up_deadline and not self.closed:
            self.up_deadline = 0.0
            r: Req = self.active
            if r is not None:
                r.upstream_timeout()

    def drain(self):
        """SIGTERM: busy connections close after their current answer. An idle keep-alive
        connection closes after DRAIN_IDLE_GRACE s without a request: a client between two
        requests may be sending the next one right now, and closing under it would lose that
        request; read in time, it is answered (with Connection: close, as while draining)."""
        if self.active is None and self.req is None and not self.queue:
            deadline = time.monotonic() + DRAIN_IDLE_GRACE
            if not self.read_deadline or deadline < self.read_deadline:
                self.read_deadline = deadline
        else:
            self.must_close = True


def _dot_segment(path: str) -> bool:
    return any(seg in (".", "..") for seg in path.split("/"))


class _Reject(Exception):
    """Raised from parser callbacks: the request is refused with this status."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail
