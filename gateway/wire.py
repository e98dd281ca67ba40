"""Bytes on the wire: the header tables and head scanners of the data path, and request ids.

Compiled with Cython together with proxy.py (gateway/build_ext.py; C declarations in wire.pxd,
which proxy.py cimports, so its calls into this module are C calls). The same code runs as plain
Python (GATEWAY_PURE_PYTHON=1, or before `make`): one implementation of each rule, tested both
ways (docs/gateway.md#code-layout).

Fast paths (docs/gateway.md#hot-path-fast-paths-and-where-the-time-goes):
- scan_request: a complete GET/HEAD head in one read, HTTP/1.1, strictly well-formed, whose only
  special headers are Host and Authorization, is parsed in one pass and its header block is
  forwarded verbatim; anything else (bodies, pipelining, other versions, any header the gateway
  rewrites or strips, anything the strict grammar does not accept) -> None -> httptools.
- scan_response: HTTP/1.1, one Content-Length, no Transfer-Encoding, nothing unusual -> the
  status, the head without hop-by-hop headers and the length; otherwise None -> httptools.
Header names are compared in place (ASCII case-insensitive) against per-length tables built from
the sets below, without lowercased copies.
"""

from __future__ import annotations

import re

import cython

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Client-sent identity/internal headers the services (or logs) might trust: never forwarded.
IDENTITY = frozenset(
    {
        b"x-user-id",
        b"x-username",
        b"x-forwarded-user",
        b"x-authenticated-user",
        b"x-service-token",
        b"x-real-ip",
        b"x-client-ip",
        b"forwarded",
    }
)
# Set by the gateway itself, so the client's copy is dropped (rebuilt from the trusted view).
REBUILT = frozenset({b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto", b"content-length", b"expect"})
STRIP_REQ = HOP_BY_HOP | IDENTITY | REBUILT
H_DROP, H_AUTHZ, H_HOST, H_CLEN, H_TE, H_RID, H_XFF, H_XFP, H_EXPECT, H_CONN, H_ORIGIN, H_ACRM, H_TP, H_TS = range(14)
SPECIAL = {name: H_DROP for name in STRIP_REQ}
SPECIAL.update(
    {
        b"authorization": H_AUTHZ,
        b"host": H_HOST,
        b"content-length": H_CLEN,
        b"transfer-encoding": H_TE,
        b"x-request-id": H_RID,
        b"x-forwarded-for": H_XFF,
        b"x-forwarded-proto": H_XFP,
        b"expect": H_EXPECT,
        b"connection": H_CONN,
        # CORS (read, and forwarded): the request's Origin, a preflight's requested method
        b"origin": H_ORIGIN,
        b"access-control-request-method": H_ACRM,
        # W3C trace context: believed from a trusted proxy only, then re-issued (gateway/tracing.py)
        b"traceparent": H_TP,
        b"tracestate": H_TS,
    }
)
# `Server` names the upstream's software (gunicorn): not passed on
STRIP_RESP = HOP_BY_HOP | {b"x-request-id", b"server"}
# Upstream response heads are rewritten with one regex pass instead of a callback per header
# (the upstreams are our own services; the request side keeps httptools' per-header view).
RESP_STRIP_RE = re.compile(rb"\r\n(?:" + b"|".join(re.escape(h) for h in sorted(STRIP_RESP)) + rb")[ \t]*:[^\r\n]*", re.I)
CLEN_RE = re.compile(rb"\r\ncontent-length[ \t]*:", re.I)
B_GET = b"GET"
B_HEAD = b"HEAD"

RESP_KIND = {name: 1 for name in STRIP_RESP}
RESP_KIND.update({b"content-length": 2, b"transfer-encoding": 3, b"connection": 4})
REQ_KIND = {name: 1 for name in SPECIAL}  # 1: the general path handles it
REQ_KIND.update({b"host": 2, b"authorization": 3, b"origin": 4})


def _by_length(kinds: dict) -> dict:
    out: dict = {}
    for name, kind in kinds.items():
        out.setdefault(len(name), []).append((name, kind))
    return out


RESP_BY_LEN = _by_length(RESP_KIND)
REQ_BY_LEN = _by_length(REQ_KIND)


def _name_kind(p: cython.p_uchar, s: cython.Py_ssize_t, n: cython.Py_ssize_t, by_len: dict) -> cython.int:
    """Kind of the header name p[s:s+n] (ASCII case-insensitive) in a _by_length table, 0 if none;
    compared in place, without a lowercased copy."""
    cands = by_len.get(n)
    if cands is None:
        return 0
    name: bytes
    q: cython.p_uchar
    i: cython.Py_ssize_t
    c: cython.uchar
    for name, kind in cands:
        q = name
        i = 0
        while i < n:
            c = p[s + i]
            if 65 <= c <= 90:
                c += 32
            if c != q[i]:
                break
            i += 1
        if i == n:
            return kind
    return 0


def _is_internal(p: cython.p_uchar, s: cython.Py_ssize_t, n: cython.Py_ssize_t) -> cython.bint:
    """p[s:s+n] starts with "x-internal-", case-insensitively."""
    q: cython.p_uchar = b"x-internal-"
    i: cython.Py_ssize_t
    c: cython.uchar
    if n < 11:
        return False
    for i in range(11):
        c = p[s + i]
        if 65 <= c <= 90:
            c += 32
        if c != q[i]:
            return False
    return True


def _is_tchar(c: cython.uchar) -> cython.bint:
    # RFC 9110 token characters
    if c >= 97:
        return c <= 122 or c == 124 or c == 126  # a-z | ~
    if c >= 65:
        return c <= 90 or c == 94 or c == 95 or c == 96  # A-Z ^ _ `
    if c >= 48:
        return c <= 57  # 0-9
    return c == 33 or (35 <= c <= 39) or c == 42 or c == 43 or c == 45 or c == 46  # ! #$%&' * + - .


def scan_request(data: bytes):
    """The request fast path's parse, one pass over a whole head: (B_GET or B_HEAD, url, header
    block, Host value, Authorization value, Origin value) or None (the general path, httptools,
    decides)."""
    n: cython.Py_ssize_t = len(data)
    p: cython.p_uchar = data
    k: cython.Py_ssize_t
    if n >= 4 and p[0] == 71 and p[1] == 69 and p[2] == 84 and p[3] == 32:  # "GET "
        k = 4
    elif n >= 5 and p[0] == 72 and p[1] == 69 and p[2] == 65 and p[3] == 68 and p[4] == 32:  # "HEAD "
        k = 5
    else:
        return None
    u0: cython.Py_ssize_t = k
    if k >= n or p[k] != 47:  # "/"
        return None
    while k < n and 0x21 <= p[k] <= 0x7E:
        k += 1
    u1: cython.Py_ssize_t = k
    if n - k < 12 or p[k] != 32 or p[k + 1] != 72 or p[k + 2] != 84 or p[k + 3] != 84 or p[k + 4] != 80:
        return None  # " HTTP"
    if p[k + 5] != 47 or p[k + 6] != 49 or p[k + 7] != 46 or p[k + 8] != 49 or p[k + 9] != 13 or p[k + 10] != 10:
        return None  # "/1.1\r\n"
    k += 11
    b0: cython.Py_ssize_t = k
    host = None
    authz = None
    origin = None
    s: cython.Py_ssize_t
    c: cython.Py_ssize_t
    v0: cython.Py_ssize_t
    v1: cython.Py_ssize_t
    ch: cython.uchar
    kind: cython.int
    fields: cython.int = 0
    while True:
        if k + 1 < n and p[k] == 13 and p[k + 1] == 10:
            if k + 2 != n:
                return None  # pipelined bytes after the head
            break
        fields += 1
        if fields > 100:
            return None  # too many fields: the general path refuses it (proxy.MAX_HEADER_FIELDS)
        s = k
        while k < n and _is_tchar(p[k]):
            k += 1
        if k == s or k >= n or p[k] != 58:  # ":"
            return None
        c = k
        k += 1
        while k < n:
            ch = p[k]
            if ch == 13:
                break
            if (ch < 32 and ch != 9) or ch == 127:
                return None
            k += 1
        if k + 1 >= n or p[k + 1] != 10:
            return None
        kind = _name_kind(p, s, c - s, REQ_BY_LEN)
        if kind >= 2:
            v0 = c + 1
            v1 = k
            while v0 < v1 and (p[v0] == 32 or p[v0] == 9):
                v0 += 1
            while v1 > v0 and (p[v1 - 1] == 32 or p[v1 - 1] == 9):
                v1 -= 1
            if kind == 2:
                if host is not None:
                    return None
                host = p[v0:v1]
            elif kind == 3:
                if authz is not None:
                    return None
                authz = p[v0:v1]
            else:
                if origin is not None:
                    return None
                origin = p[v0:v1]
        elif kind == 1 or _is_internal(p, s, c - s):
            return None  # a header the gateway rewrites or strips: the general path
        k += 2
    return (B_GET if u0 == 4 else B_HEAD), p[u0:u1], p[b0 : n - 2], host, authz, origin


def scan_response(data: bytes, end: cython.Py_ssize_t):
    """The response fast path's checks in one pass over a head whose end (CRLF CRLF) is at
    `end`: (status, head without hop-by-hop headers, Content-Length) or None.
    Anything unusual (a Connection header mentioning close, Transfer-Encoding, a bare CR or LF,
    whitespace before a Content-Length colon, ...) -> None: the parser decides."""
    p: cython.p_uchar = data
    if end < 12 or p[0] != 72 or p[1] != 84 or p[2] != 84 or p[3] != 80 or p[4] != 47 or p[5] != 49:
        return None  # "HTTP/1"
    if p[6] != 46 or p[7] != 49 or p[8] != 32:
        return None  # ".1 "
    if not (48 <= p[9] <= 57 and 48 <= p[10] <= 57 and 48 <= p[11] <= 57):
        return None
    status: cython.int = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    if status < 200 or status == 204 or status == 304 or (p[12] != 32 and p[12] != 13):
        return None
    k: cython.Py_ssize_t = 12
    while k < end and p[k] != 13:
        if p[k] == 10:
            return None
        k += 1
    clen: cython.longlong = -1
    keep_from: cython.Py_ssize_t = 0
    out = None
    s: cython.Py_ssize_t
    e: cython.Py_ssize_t
    c: cython.Py_ssize_t
    ne: cython.Py_ssize_t
    j: cython.Py_ssize_t
    kind: cython.int
    while k < end:  # p[k] == 13: a header line starts at k + 2
        if p[k + 1] != 10:
            return None
        s = k + 2
        e = s
        c = -1
        while e < end and p[e] != 13:
            if p[e] == 10:
                return None
            if c < 0 and p[e] == 58:
                c = e
            e += 1
        if c > s:
            ne = c
            while ne > s and (p[ne - 1] == 32 or p[ne - 1] == 9):
                ne -= 1
            kind = _name_kind(p, s, ne - s, RESP_BY_LEN)
            if kind:
                if kind == 2:  # Content-Length: exactly one, no blank before the colon, digits
                    if clen >= 0 or ne != c:
                        return None
                    j = c + 1
                    while j < e and (p[j] == 32 or p[j] == 9):
                        j += 1
                    if j == e or e - j > 15:
                        return None
                    clen = 0
                    while j < e and 48 <= p[j] <= 57:
                        clen = clen * 10 + (p[j] - 48)
                        j += 1
                    while j < e and (p[j] == 32 or p[j] == 9):
                        j += 1
                    if j != e:
                        return None
                else:
                    if kind == 3:
                        return None  # Transfer-Encoding: the parser handles it
                    if kind == 4 and b"close" in p[c:e].lower():
                        return None  # the parser decides whether the connection is reusable
                    if out is None:
                        out = []
                    out.append(p[keep_from:k])  # drop CRLF + this line
                    keep_from = e
        k = e
    if clen < 0:
        return None
    if out is None:
        head = data[:end]
    else:
        out.append(p[keep_from:end])
        head = b"".join(out)
    return status, head, clen


class RequestIds:  # compiled: a final extension type (wire.pxd)
    """X-Request-ID values: 14 hex digits fixed per process + a 10-hex-digit counter, kept as text
    and incremented in place (unique per process, no syscall and no formatting per request)."""

    def __init__(self, prefix: bytes):
        if len(prefix) != 14:
            raise ValueError("request id prefix must be 14 bytes")
        self.buf = bytearray(prefix + b"0" * 10)

    def next(self) -> bytes:
        buf: bytearray = self.buf
        i: cython.Py_ssize_t = 23
        c: cython.int
        while i >= 14:
            c = buf[i]
            if c == 57:  # "9" -> "a"
                buf[i] = 97
                break
            if c != 102:  # below "f": no carry
                buf[i] = c + 1
                break
            buf[i] = 48  # "f" -> "0", carry into the next digit (wraps after 16**10 ids)
            i -= 1
        return bytes(buf)


class TraceIds:  # compiled: a final extension type (wire.pxd)
    """The gateway's `traceparent` header lines (gateway/tracing.py), built like RequestIds: no
    formatting per request. Trace id: 16 random hex digits fixed per process + a 16-digit counter;
    span id: 8 more random digits fixed per process + the counter's last 8 (a span id need only
    be unique within its trace). Unique across processes through the random parts (64 and 32
    bits drawn from os.urandom in each worker after the fork)."""

    def __init__(self, trace_prefix: bytes, span_prefix: bytes):
        if len(trace_prefix) != 16 or len(span_prefix) != 8:
            raise ValueError("trace id prefixes must be 16 and 8 hex digits")
        # "traceparent: 00-" (16) trace id (32) "-" span id (16) "-" flags (2) CRLF
        self.buf = bytearray(b"traceparent: 00-" + trace_prefix + b"0" * 16 + b"-" + span_prefix + b"0" * 8 + b"-00\r\n")

    def next(self, sampled: cython.bint) -> bytes:
        buf: bytearray = self.buf
        i: cython.Py_ssize_t = 47  # the trace id's last digit
        c: cython.int
        while i >= 32:
            c = buf[i]
            if c == 57:  # "9" -> "a"
                buf[i] = 97
                break
            if c != 102:  # below "f": no carry
                buf[i] = c + 1
                break
            buf[i] = 48  # "f" -> "0", carry (wraps after 16**16 ids)
            i -= 1
        for i in range(8):  # the span id's counter part: the trace counter's last 8 digits
            buf[57 + i] = buf[40 + i]
        buf[67] = 49 if sampled else 48  # flags "01" / "00"
        return bytes(buf)


# trace and span ids' random bits (xorshift64*), per process; C globals when compiled (wire.pxd)
MASK64 = 0xFFFFFFFFFFFFFFFF
_rng = 0x9E3779B97F4A7C15


def seed_trace_ids(seed: int) -> None:
    """Seed the id generator: in each worker after the fork (server.Gateway), from os.urandom."""
    global _rng
    _rng = (seed & MASK64) or 1


def rand64() -> cython.ulonglong:
    """The next 64 random bits (xorshift64*: fast, not cryptographic; trace ids need only be unique).
    One code path: compiled, C arithmetic wraps modulo 2**64 and the masks cost nothing; as plain
    Python they keep the numbers to 64 bits."""
    global _rng
    x: cython.ulonglong = _rng
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    _rng = x
    return (x * 0x2545F4914F6CDD1D) & MASK64
