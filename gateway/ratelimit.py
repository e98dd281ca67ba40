"""Token-bucket rate limiting in Redis: one atomic Lua script per request, shared by every
gateway process.

The hot path sends a single EVALSHA over one pipelined connection per process (replies are
matched FIFO, parsed by hiredis), so concurrent requests share round trips and no client
object is created per request. Any Redis trouble (down, slow beyond GATEWAY_REDIS_TIMEOUT,
error) fails OPEN: the request proceeds and a warning is logged at most every 10 s. Rationale
in docs/gateway.md: an outage of a cache must not become an outage of the API; the services
keep their own limits for the expensive operations.
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

# KEYS: one hash per bucket {t: tokens, ts: ms}. ARGV: rate1, burst1, rate2, burst2, ...
# Returns {allowed, limit, remaining, reset_s, retry_after_ms, denied_index} (headers describe the
# most restrictive bucket; denied_index is the 1-based KEYS index that refused, 0 if none).
# Time comes from the Redis server, so every gateway process agrees on it.
SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local toks = {}
local allowed = 1
local retry = 0
local denied = 0
for i = 1, n do
  local rate = tonumber(ARGV[2*i-1])
  local burst = tonumber(ARGV[2*i])
  local h = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(h[1])
  local ts = tonumber(h[2])
  if tokens == nil or ts == nil then tokens = burst; ts = now end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  toks[i] = tokens
  if tokens < 1 then
    allowed = 0
    local w = math.ceil((1 - tokens) * 1000 / rate)
    if w > retry then retry = w; denied = i end
  end
end
local limit, remaining, reset = 0, -1, 0
for i = 1, n do
  local rate = tonumber(ARGV[2*i-1])
  local burst = tonumber(ARGV[2*i])
  local tokens = toks[i]
  if allowed == 1 then tokens = tokens - 1 end
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst * 1000 / rate) + 1000)
  local rem = math.floor(tokens)
  if remaining == -1 or rem < remaining then
    remaining = rem
    limit = burst
    reset = math.ceil((burst - tokens) / rate)
  end
end
return {allowed, limit, remaining, reset, retry, denied}
"""
SHA = hashlib.sha1(SCRIPT).hexdigest().encode()


def _cmd(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


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
    """check(keys, args, callback, ctx): callback(ctx, result) with result = the script's reply,
    or None when Redis is unavailable (fail open)."""

    def __init__(self, url: str, *, timeout: float, on_failopen=None, what: str = "rate limiting"):
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
        self.proto: _RedisProtocol | None = None
        self.connecting = False
        self.last_attempt = -1e9
        self.pending: collections.deque = collections.deque()  # (sent_at, callback, payload)
        self.last_warning = -1e9

    # -- hot path ---------------------------------------------------------------------------
    def check(self, keys: list[bytes], args: list[bytes], callback, ctx) -> None:
        proto = self.proto
        if proto is None:
            self._ensure_connected()
            self._failopen("redis not connected")
            callback(ctx, None)
            return
        payload = _cmd(b"EVALSHA", SHA, b"%d" % len(keys), *keys, *args)
        self.pending.append((time.monotonic(), callback, ctx, payload))
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
            self._failopen(f"redis error: {reply}")
            callback(ctx, None)
            return
        callback(ctx, reply)

    def _resend_eval(self, payload: bytes, callback, ctx) -> None:
        # payload is EVALSHA <sha> ...; swap the first two bulk strings for EVAL <script>
        head = _cmd(b"EVALSHA", SHA)
        rest = payload[len(head) :]
        count = int(payload[1 : payload.index(b"\r\n")])
        new = b"*%d\r\n" % count + b"$4\r\nEVAL\r\n" + b"$%d\r\n%s\r\n" % (len(SCRIPT), SCRIPT) + rest
        if self.proto is None:
            self._failopen("redis not connected")
            callback(ctx, None)
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
            self._failopen(f"redis connect failed: {exc}")
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
            self._failopen(why)
        for _, cb, ctx, _ in pending:
            if cb is not None:
                cb(ctx, None)

    def tick(self, now: float) -> None:
        """Called periodically: a reply older than the timeout means Redis is stuck -> reset, fail open."""
        if self.pending and now - self.pending[0][0] > self.timeout:
            proto, self.proto = self.proto, None
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
            self._flush_pending(f"redis reply slower than {self.timeout}s")
        if self.proto is None:
            self._ensure_connected()

    def _failopen(self, why: str) -> None:
        if self.on_failopen is not None:
            self.on_failopen()
        now = time.monotonic()
        if now - self.last_warning >= 10.0:
            self.last_warning = now
            log.warning("%s fails open: %s", self.what, why)

    def connect_soon(self) -> None:
        self._ensure_connected()

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None
