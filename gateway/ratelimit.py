"""Token-bucket rate limiting shared through Redis, without a Redis round trip per request.

The buckets live in Redis (one hash per bucket, refilled with Redis' clock), so every gateway
worker and replica draws from the same ones. A worker does not ask Redis for each request: it
*leases* tokens. One Lua script call refills a bucket and takes up to n whole tokens from it
atomically; the worker then admits requests from its lease locally, and gives back what it did not
use when the lease ends (GATEWAY_RATELIMIT_LEASE seconds after the grant, default 0.25; all the
keys whose leases ended go back in one call per tick). The lease size adapts per key: 1 token at
first, doubled each time a lease runs out before it ends, halved each time tokens come back, and
never above the key's cap = max(1, min(burst // 10, rate x lease)). A hot key costs a few Redis
calls per second instead of one per request; a key used now and then costs one call per request,
as before; a bucket whose cap is 1 (login, register, refresh) is exact, as before.

Bound (docs/gateway.md#rate-limiting): every admitted request spent a token the Redis bucket gave
out, so over any interval of length D a bucket admits at most burst + rate x D + the tokens that
sat in leases when the interval began, i.e. at most N x cap more than one exact bucket (N = gateway
workers across all replicas); from a full or idle bucket, not one more. The other way round, a
request can be refused while up to N x cap tokens sit unused in other workers' leases, for at most
one lease time.

The transport is one pipelined RESP connection per process (replies matched FIFO, parsed by
hiredis), also used for the revocation set's EXISTS (call()). Any Redis trouble (down, slower than
GATEWAY_REDIS_TIMEOUT, error) fails OPEN: a request that needs Redis proceeds and a warning is
logged at most every 10 s; tokens already leased are still spent. Rationale in docs/gateway.md:
an outage of a cache must not become an outage of the API; the services keep their own limits for
the expensive operations.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

log = logging.getLogger("gateway.ratelimit")

_monotonic = time.monotonic

# KEYS: one hash per bucket {t: tokens, ts: ms} (the same layout as the one-call-per-request script
# this replaced, so processes of both versions share buckets during a rolling update).
# ARGV, 4 per key: rate (tokens/s), burst, take (whole tokens wanted), give (unused tokens returned).
# Per key: refill by Redis' clock, add `give` (never above burst), grant min(take, floor(tokens)).
# Returns, 3 per key: granted, tokens left x 1000 (floored), ms until one token when take > 0 and
# nothing was granted (else 0).
SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[4*i-3])
  local burst = tonumber(ARGV[4*i-2])
  local take = tonumber(ARGV[4*i-1])
  local give = tonumber(ARGV[4*i])
  local h = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(h[1])
  local ts = tonumber(h[2])
  if tokens == nil or ts == nil then tokens = burst; ts = now end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000 + give)
  local granted = math.max(0, math.min(take, math.floor(tokens)))
  tokens = tokens - granted
  local retry = 0
  if take > 0 and granted == 0 then retry = math.ceil((1 - tokens) * 1000 / rate) end
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst * 1000 / rate) + 1000)
  out[3*i-2] = granted
  out[3*i-1] = math.floor(tokens * 1000)
  out[3*i] = retry
end
return out
"""
SHA = hashlib.sha1(SCRIPT).hexdigest().encode()

MAX_KEYS_PER_CALL = 256  # tokens given back at a tick go in calls of at most this many keys
IDLE_FORGET = 2.0  # seconds after its last use a bucket's local state (lease size, level) is dropped


def _cmd(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def lease_cap(rate: float, burst: int, lease: float) -> int:
    """The most tokens one worker holds for a bucket: max(1, min(burst // 10, rate x lease))."""
    return max(1, min(burst // 10, int(rate * lease)))


class _Bucket:
    """One worker's view of one Redis bucket: its lease and what Redis said last."""

    __slots__ = (
        "burst",
        "burst_b",
        "cap",
        "denied_until",
        "granted_at",
        "inflight",
        "key",
        "lease",
        "level",
        "level_at",
        "rate",
        "rate_b",
        "retry_at",
        "used_at",
        "waiting",
        "want",
    )

    def __init__(self, key: bytes, rate_b: bytes, burst_b: bytes, lease_s: float, now: float):
        self.key = key
        self.lease = 0  # whole tokens held, usable until granted_at + lease time
        self.granted_at = -1e9
        self.want = 1  # tokens asked for at the next grant (adapts, never above cap)
        self.level = 0.0  # tokens Redis reported left in the bucket at level_at
        self.level_at = now
        self.inflight = False  # a grant request for this key is on the wire
        self.denied_until = -1e9  # Redis refused: refuse locally until then (at most one lease time)
        self.retry_at = -1e9
        self.waiting = 0  # queued requests that need this key
        self.used_at = now
        self.configure(rate_b, burst_b, lease_s)

    def configure(self, rate_b: bytes, burst_b: bytes, lease_s: float) -> None:
        self.rate_b, self.burst_b = rate_b, burst_b
        self.rate, self.burst = float(rate_b), int(burst_b)
        self.cap = lease_cap(self.rate, self.burst, lease_s)
        self.level = min(self.level, float(self.burst))
        if self.want > self.cap:
            self.want = self.cap

    def tokens(self, now: float) -> float:
        """Tokens this worker believes the client has: Redis' level refilled since, plus the lease."""
        level = self.level + (now - self.level_at) * self.rate
        if level > self.burst:
            level = self.burst
        level += self.lease
        return level if level < self.burst else float(self.burst)


def _admit(bs: list[_Bucket], now: float) -> tuple:
    """Spend one leased token of each bucket; the headers describe the tightest bucket."""
    limit = remaining = reset = -1
    for b in bs:
        b.lease -= 1
        level = b.level + (now - b.level_at) * b.rate
        burst = b.burst
        if level > burst:
            level = burst
        tokens = level + b.lease
        if tokens > burst:
            tokens = burst
        rem = int(tokens)
        if remaining == -1 or rem < remaining:
            remaining, limit = rem, burst
            reset = -int((tokens - burst) // b.rate)  # ceil((burst - tokens) / rate)
    return (1, limit, remaining, reset, 0, 0)


class _RedisProtocol(asyncio.Protocol):
    def __init__(self, owner: RedisLimiter):
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: Any = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.reader.feed(data)
        owner = self.owner
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            owner._reply(reply)

    def connection_lost(self, exc):
        self.owner._lost(self)


class RedisLimiter:
    """check(keys, args, callback, ctx): callback(ctx, result), result = (allowed, limit, remaining,
    reset_s, retry_after_ms, denied_index) for the keys (args: rate, burst per key, as bytes), or None
    when Redis is unavailable (fail open). The callback runs at once when the worker's leases decide,
    otherwise when Redis answers. call(payload, callback, ctx): any command on the same connection."""

    def __init__(self, url: str, *, timeout: float, on_failopen=None, what: str = "rate limiting", lease: float = 0.25):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported REDIS_URL scheme {parts.scheme!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.ssl = parts.scheme == "rediss"
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        db = (parts.path or "/0").strip("/") or "0"
        self.db = int(db) if db.isdigit() else 0
        self.timeout = timeout
        self.on_failopen = on_failopen
        self.what = what  # for the fail-open warning
        self.lease_s = max(0.0, lease)
        self.proto: _RedisProtocol | None = None
        self.connecting = False
        self.last_attempt = -1e9
        # (sent_at, callback, ctx, payload): payload kept for EVALSHA (resent as EVAL on NOSCRIPT)
        self.pending: collections.deque = collections.deque()
        self.last_warning = -1e9
        self.buckets: dict[bytes, _Bucket] = {}
        self.waiters: list = []  # [buckets, callback, ctx] of requests waiting for a grant

    # -- hot path ---------------------------------------------------------------------------
    def check(self, keys: list[bytes], args: list[bytes], callback, ctx) -> None:
        now = _monotonic()
        table = self.buckets
        lease_s = self.lease_s
        bs: list[_Bucket] = []
        need = False
        i = 0
        for key in keys:
            rate_b = args[i]
            b = table.get(key)
            if b is None:
                b = table[key] = _Bucket(key, rate_b, args[i + 1], lease_s, now)
            elif b.rate_b is not rate_b or b.burst_b is not args[i + 1]:  # (the same objects unless reloaded)
                if b.rate_b != rate_b or b.burst_b != args[i + 1]:
                    b.configure(rate_b, args[i + 1], lease_s)
                b.rate_b, b.burst_b = rate_b, args[i + 1]
            i += 2
            b.used_at = now
            if b.lease < 1 or now - b.granted_at > lease_s:
                if b.denied_until >= now:  # Redis refused this key a moment ago
                    callback(ctx, self._denied(b, len(bs) + 1, now))
                    return
                need = True
            bs.append(b)
        if not need:
            callback(ctx, _admit(bs, now))
            return
        if self.proto is None:
            self._ensure_connected()
            self._failopen("redis not connected")
            callback(ctx, None)
            return
        for b in bs:
            b.waiting += 1
        self.waiters.append((bs, callback, ctx))
        self._grant([b for b in bs if not b.inflight and (b.lease < 1 or now - b.granted_at > lease_s)], now)

    @staticmethod
    def _denied(b: _Bucket, index: int, now: float) -> tuple:
        tokens = b.tokens(now)
        retry_ms = max(1, -int((now - b.retry_at) * 1000 // 1))
        return (0, b.burst, int(tokens), -int((tokens - b.burst) // b.rate), retry_ms, index)

    def _grant(self, bs: list[_Bucket], now: float) -> None:
        """One script call: for each bucket give back an ended lease and take a new one."""
        if not bs:
            return
        proto = self.proto
        if proto is None:
            self._ensure_connected()
            self._warn("redis not connected")
            self._serve(_monotonic(), failed=set(bs))
            return
        keys: list[bytes] = []
        args: list[bytes] = []
        for b in bs:
            give = b.lease
            if give < 1 and now - b.granted_at <= self.lease_s and b.want < b.cap:
                b.want = min(b.cap, b.want * 2)  # the lease ran out before it ended: ask for more
            take = max(b.want, b.waiting)
            if take > b.cap:
                take = b.cap
            b.lease = 0
            b.inflight = True
            keys.append(b.key)
            args += (b.rate_b, b.burst_b, b"%d" % take, b"%d" % give)
        payload = _cmd(b"EVALSHA", SHA, b"%d" % len(keys), *keys, *args)
        self.pending.append((now, self._granted, bs, payload))
        proto.transport.write(payload)

    def _granted(self, bs: list[_Bucket], reply) -> None:
        now = _monotonic()
        if reply is None or not isinstance(reply, list) or len(reply) != 3 * len(bs):
            for b in bs:
                b.inflight = False
            if reply is not None:
                self._warn(f"unexpected redis reply {reply!r:.80}")
            self._serve(now, failed=set(bs))
            return
        lease_s = self.lease_s
        for j, b in enumerate(bs):
            granted, level_milli, retry_ms = reply[3 * j], reply[3 * j + 1], reply[3 * j + 2]
            b.inflight = False
            b.lease = granted
            b.level = level_milli / 1000
            b.level_at = now
            if granted:
                b.granted_at = now
            else:
                b.retry_at = now + retry_ms / 1000
                b.denied_until = now + min(retry_ms / 1000, lease_s)
        self._serve(now)

    def _serve(self, now: float, failed: set | None = None) -> None:
        """Decide the waiting requests that can be decided; ask Redis for the keys still missing."""
        waiters, self.waiters = self.waiters, []
        keep = []
        fetch: list[_Bucket] = []
        lease_s = self.lease_s
        for w in waiters:
            bs, callback, ctx = w
            result: tuple | None = None  # None: fail open
            if failed is None or not any(b in failed for b in bs):
                wait = False
                for index, b in enumerate(bs, 1):
                    if b.lease >= 1 and now - b.granted_at <= lease_s:
                        continue
                    if b.denied_until >= now:
                        result = self._denied(b, index, now)
                        break
                    wait = True
                    if not b.inflight and b not in fetch:
                        fetch.append(b)
                else:
                    if wait:
                        keep.append(w)
                        continue
                    result = _admit(bs, now)
            for b in bs:
                b.waiting -= 1
            if result is None:
                self._count_failopen()
            try:
                callback(ctx, result)
            except Exception:
                log.exception("rate-limit callback failed")
        self.waiters = keep + self.waiters  # callbacks may have queued new requests meanwhile
        if fetch:
            self._grant(fetch, now)

    def _given(self, bs: list[_Bucket], reply) -> None:
        """Tokens given back at a tick: note the levels Redis reports."""
        if not isinstance(reply, list) or len(reply) != 3 * len(bs):
            return
        now = _monotonic()
        for j, b in enumerate(bs):
            if not b.inflight:
                b.level = reply[3 * j + 1] / 1000
                b.level_at = now

    def _expire(self, now: float) -> None:
        """At a tick: give back the leases that ended (batched), forget buckets long unused."""
        lease_s = self.lease_s
        give: list[_Bucket] = []
        forget = []
        for key, b in self.buckets.items():
            if b.inflight or b.waiting:
                continue
            if b.lease > 0:
                if now - b.granted_at > lease_s:
                    give.append(b)
            elif now - b.used_at > IDLE_FORGET and b.denied_until < now:
                forget.append(key)
        for key in forget:
            del self.buckets[key]
        if not give:
            return
        proto = self.proto
        for start in range(0, len(give), MAX_KEYS_PER_CALL):
            chunk = give[start : start + MAX_KEYS_PER_CALL]
            keys: list[bytes] = []
            args: list[bytes] = []
            for b in chunk:
                keys.append(b.key)
                args += (b.rate_b, b.burst_b, b"0", b"%d" % b.lease)
                b.lease = 0
                b.want = max(1, b.want // 2)  # tokens came back unused: ask for fewer next time
            if proto is not None:
                payload = _cmd(b"EVALSHA", SHA, b"%d" % len(keys), *keys, *args)
                self.pending.append((now, self._given, chunk, payload))
                proto.transport.write(payload)

    def call(self, payload: bytes, callback, ctx) -> None:
        """Any command (RESP-encoded, see _cmd): callback(ctx, reply), reply None when Redis failed."""
        proto = self.proto
        if proto is None:
            self._ensure_connected()
            self._failopen("redis not connected")
            callback(ctx, None)
            return
        self.pending.append((time.monotonic(), callback, ctx, None))
        proto.transport.write(payload)

    def _reply(self, reply) -> None:
        if not self.pending:
            return
        _, callback, ctx, payload = self.pending.popleft()
        if callback is None:  # internal command (AUTH/SELECT/SCRIPT LOAD)
            if isinstance(reply, hiredis.ReplyError):
                log.warning("redis setup command failed: %s", reply)
            return
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith("NOSCRIPT") and payload is not None:
                # script cache flushed (Redis restart): send the body once, keep FIFO order
                self._resend_eval(payload, callback, ctx)
                return
            self._warn(f"redis error: {reply}")
            self._notify_failed(callback, ctx)
            return
        callback(ctx, reply)

    def _notify_failed(self, callback, ctx) -> None:
        """A command failed: its requests pass. Lease calls count their waiting requests themselves."""
        if callback != self._granted and callback != self._given:
            self._count_failopen()
        callback(ctx, None)

    def _resend_eval(self, payload: bytes, callback, ctx) -> None:
        # payload is EVALSHA <sha> ...; swap the first two bulk strings for EVAL <script>
        head = _cmd(b"EVALSHA", SHA)
        rest = payload[len(head) :]
        count = int(payload[1 : payload.index(b"\r\n")])
        new = b"*%d\r\n" % count + b"$4\r\nEVAL\r\n" + b"$%d\r\n%s\r\n" % (len(SCRIPT), SCRIPT) + rest
        if self.proto is None:
            self._warn("redis not connected")
            self._notify_failed(callback, ctx)
            return
        self.pending.append((time.monotonic(), callback, ctx, None))
        self.proto.transport.write(new)

    # -- connection management ------------------------------------------------------------
    def _ensure_connected(self) -> None:
        if self.connecting or self.proto is not None:
            return
        now = time.monotonic()
        if now - self.last_attempt < 1.0:
            return
        self.last_attempt = now
        self.connecting = True
        self._connect_task = asyncio.ensure_future(self._connect())  # referenced: not garbage-collected

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            ssl = True if self.ssl else None
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _RedisProtocol(self), self.host, self.port, ssl=ssl),
                timeout=max(self.timeout, 1.0),
            )
        except (TimeoutError, OSError) as exc:
            self._warn(f"redis connect failed: {exc}")
            return
        finally:
            self.connecting = False
        setup = []
        if self.password:
            setup.append(
                _cmd(b"AUTH", self.username.encode(), self.password.encode())
                if self.username
                else _cmd(b"AUTH", self.password.encode())
            )
        if self.db:
            setup.append(_cmd(b"SELECT", str(self.db).encode()))
        setup.append(_cmd(b"SCRIPT", b"LOAD", SCRIPT))
        for cmd in setup:
            self.pending.append((time.monotonic(), None, None, None))
            proto.transport.write(cmd)
        self.proto = proto
        log.info("redis connected: %s:%s%s", self.host, self.port, "" if self.what == "rate limiting" else f" ({self.what})")

    def _lost(self, proto) -> None:
        if self.proto is proto:  # a connection we already dropped in tick() was flushed there
            self.proto = None
            self._flush_pending("redis connection lost")

    def _flush_pending(self, why: str) -> None:
        pending, self.pending = self.pending, collections.deque()
        if any(cb is not None for _, cb, _, _ in pending):
            self._warn(why)
        for _, cb, ctx, _ in pending:
            if cb is not None:
                self._notify_failed(cb, ctx)

    def tick(self, now: float) -> None:
        """Called periodically: a reply older than the timeout means Redis is stuck -> reset, fail
        open; leases that ended go back to Redis."""
        if self.pending and now - self.pending[0][0] > self.timeout:
            proto, self.proto = self.proto, None
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
            self._flush_pending(f"redis reply slower than {self.timeout}s")
        if self.proto is None:
            self._ensure_connected()
        if self.buckets:
            self._expire(now)

    def _count_failopen(self) -> None:
        if self.on_failopen is not None:
            self.on_failopen()

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self.last_warning >= 10.0:
            self.last_warning = now
            log.warning("%s fails open: %s", self.what, why)

    def _failopen(self, why: str) -> None:
        """A request passes because Redis is unavailable: count it, warn at most every 10 s."""
        self._count_failopen()
        self._warn(why)

    def connect_soon(self) -> None:
        self._ensure_connected()

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None
