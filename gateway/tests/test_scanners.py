"""The fast paths' byte scanners (gateway/wire.py) against the regex grammar they implement (in process).

wire.scan_request must accept exactly the requests _match_request below (FAST_REQ + FAST_OTHER +
the Host/Authorization lookups) accepts, with the same parts; wire.scan_response may refuse
more than the regex checks (the parser then decides) but whatever it accepts must match them:
status, head without hop-by-hop headers, Content-Length, and a reusable connection.
Runs against whichever build is loaded (compiled, or plain Python with GATEWAY_PURE_PYTHON=1:
the `gateway` and `gateway-pure` suites).
"""

from __future__ import annotations

import random
import re

from gateway import wire

N = 20_000

# The request fast path's grammar as regexes (how it was first written): a complete GET/HEAD head,
# HTTP/1.1, token header names, no obs-fold, printable URL, no header the gateway strips or rewrites.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
FAST_REQ = re.compile(rb"(GET|HEAD) (/[\x21-\x7e]*) HTTP/1\.1\r\n((?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n")
# on the lowercased header block with a "\n" in front: any header the fast path does not handle
FAST_OTHER = re.compile(
    rb"\n(?:(?:"
    + b"|".join(re.escape(h) for h in sorted(set(wire.SPECIAL) - {b"host", b"authorization", b"origin"}))
    + rb"):|x-internal-)"
)
RESP_CONN_CLOSE = re.compile(rb"\r\nconnection[ \t]*:[^\r\n]*\bclose\b", re.I)


def _match_request(data: bytes):
    """(method, url, header block, host, authz, origin) or None when the request needs the general path."""
    m = FAST_REQ.fullmatch(data)
    if m is None:
        return None
    block = m.group(3)
    if block.count(b"\r\n") > 100:
        return None  # more header fields than the gateway accepts: the general path refuses them
    low = b"\n" + block.lower()  # offsets in low are offsets in block + 1
    if FAST_OTHER.search(low) is not None:
        return None
    host = authz = None
    i = low.find(b"\nhost:")
    if i >= 0:
        if low.find(b"\nhost:", i + 6) >= 0:
            return None
        host = block[i + 5 : block.index(b"\r", i)].strip(b" \t")
    i = low.find(b"\nauthorization:")
    if i >= 0:
        if low.find(b"\nauthorization:", i + 15) >= 0:
            return None
        authz = block[i + 14 : block.index(b"\r", i)].strip(b" \t")
    origin = None
    i = low.find(b"\norigin:")
    if i >= 0:
        if low.find(b"\norigin:", i + 8) >= 0:
            return None
        origin = block[i + 7 : block.index(b"\r", i)].strip(b" \t")
    return m.group(1), m.group(2), block, host, authz, origin


def _old_response_checks(data: bytes):
    """The response fast path's checks as they were first written (lowercased head, find, regex)."""
    if data[:9] != b"HTTP/1.1 ":
        return None
    end = data.find(b"\r\n\r\n")
    code = data[9:12]
    if not (end > 0 and code.isdigit() and code >= b"200" and data[12:13] in (b" ", b"\r")):
        return None
    head = data[:end]
    low = head.lower()
    i = low.find(b"\r\ncontent-length:")
    if not (
        i > 0
        and low.find(b"\r\ncontent-length:", i + 17) < 0
        and low.find(b"\r\ntransfer-encoding:") < 0
        and code not in (b"204", b"304")
    ):
        return None
    j = low.find(b"\r\n", i + 17)
    clen = low[i + 17 : j if j > 0 else end].strip(b" \t")
    if not clen.isdigit():
        return None
    reusable = b"close" not in low or RESP_CONN_CLOSE.search(head) is None
    return int(code), wire.RESP_STRIP_RE.sub(b"", head), int(clen), reusable


RESP_NAMES = [
    b"Server",
    b"Date",
    b"Content-Type",
    b"Content-Length",
    b"content-length",
    b"CONTENT-LENGTH",
    b"Content-Length ",
    b"Connection",
    b"connection",
    b"Connection\t",
    b"Keep-Alive",
    b"Transfer-Encoding",
    b"TE",
    b"te",
    b"Trailer",
    b"Upgrade",
    b"X-Request-ID",
    b"x-request-id",
    b"Proxy-Connection",
    b"Set-Cookie",
    b"X-Te",
    b"Tea",
    b"Connectionx",
    b" Connection",
    b"Proxy-Authenticate",
    b"Proxy-Authorization",
    b"Vary",
    b"",
]
RESP_VALUES = [
    b"keep-alive",
    b"close",
    b"Close",
    b"keep-alive, close",
    b"closed",
    b"11",
    b" 11 ",
    b"abc",
    b"",
    b"1\x0b",
    b"text/html",
    b"chunked",
    b"0",
    b"12a",
    b"x\ny",
    b"x\ry",
    b"99999999999999999999",
    b"\t5",
]


def _response(rnd: random.Random) -> bytes:
    status = rnd.choice(
        [
            b"200 OK",
            b"201 Created",
            b"204 No Content",
            b"304 Not Modified",
            b"101 Switching",
            b"500 Err",
            b"404",
            b"2x0 Bad",
            b"200\r",
        ]
    )
    lines = [rnd.choice([b"HTTP/1.1 "] * 8 + [b"HTTP/1.0 ", b"HTTP/2.0 "]) + status]
    for _ in range(rnd.randint(0, 7)):
        name = rnd.choice(RESP_NAMES)
        sep = rnd.choice([b": ", b":", b" : ", b":\t"]) if name else b""
        lines.append(name + sep + rnd.choice(RESP_VALUES))
    if rnd.random() < 0.7:
        lines.append(b"Content-Length: " + str(rnd.randint(0, 20)).encode())
    head = lines[:1] + rnd.sample(lines[1:], len(lines) - 1)
    return b"\r\n".join(head) + b"\r\n\r\n" + b"x" * rnd.randint(0, 20)


REQ_NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Authorization",
    b"authorization",
    b"Accept",
    b"User-Agent",
    b"X-Request-ID",
    b"X-Forwarded-For",
    b"X-Internal-Foo",
    b"x-internal-",
    b"Connection",
    b"Content-Length",
    b"Expect",
    b"X-User-Id",
    b"Forwarded",
    b"Cookie",
    b"Host ",
    b"Ho st",
    b"",
    b"X(y",
    b"Accept-Encoding",
    b"Transfer-Encoding",
    b"Te",
    b"Hostx",
    b"Authorizations",
    b"Origin",
    b"origin",
    b"Originx",
    b"Access-Control-Request-Method",
]
REQ_VALUES = [
    b"example.com",
    b" example.com ",
    b"\tBearer abc\t",
    b"Bearer abc",
    b"",
    b"a\x01b",
    b"a\x7fb",
    b"\x80\xff",
    b"x\ry",
    b"a b",
]


def _request(rnd: random.Random) -> bytes:
    line = (
        rnd.choice([b"GET", b"HEAD", b"POST", b"get", b"GETX"])
        + b" "
        + rnd.choice([b"/", b"/api/v1/users/me", b"/a?b=c", b"/a b", b"a", b"/\x80", b"/%2e%2e/", b""])
        + b" "
        + rnd.choice([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.10"])
    )
    lines = [line] + [
        rnd.choice(REQ_NAMES) + rnd.choice([b": ", b":", b" :"]) + rnd.choice(REQ_VALUES) for _ in range(rnd.randint(0, 5))
    ]
    return b"\r\n".join(lines) + rnd.choice([b"\r\n\r\n"] * 10 + [b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"])


def test_request_scanner_matches_the_regex_version():
    rnd = random.Random(20261126)
    accepted = 0
    for _ in range(N):
        data = _request(rnd)
        want = _match_request(data)
        assert wire.scan_request(data) == want, data
        accepted += want is not None
    assert accepted > N // 50  # the generator does produce fast-path requests


def test_response_scanner_accepts_nothing_the_old_checks_refuse():
    rnd = random.Random(20261127)
    accepted = 0
    for _ in range(N):
        data = _response(rnd)
        end = data.find(b"\r\n\r\n")
        got = wire.scan_response(data, end) if end > 0 else None
        if got is not None:
            old = _old_response_checks(data)
            assert old is not None and old[3] and (old[0], old[1], old[2]) == got, data
            accepted += 1
    assert accepted > N // 50


def test_request_ids_count_up_in_hex():
    ids = wire.RequestIds(b"0123456789abcd")
    seen = [ids.next() for _ in range(300)]
    assert seen[0] == b"0123456789abcd0000000001"
    assert seen[8:10] == [b"0123456789abcd0000000009", b"0123456789abcd000000000a"]
    assert seen[14:16] == [b"0123456789abcd000000000f", b"0123456789abcd0000000010"]
    assert seen[-1] == b"0123456789abcd000000012c"  # 300
    assert len(set(seen)) == 300


def test_common_heads_take_the_fast_paths():
    request = b"GET /api/v1/users/me?x=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\nAccept: */*\r\n\r\n"
    assert wire.scan_request(request) == (
        b"GET",
        b"/api/v1/users/me?x=1",
        b"Host: gw\r\nAuthorization: Bearer t\r\nAccept: */*\r\n",
        b"gw",
        b"Bearer t",
        None,
    )
    response = (
        b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b"X-Request-ID: spoofed\r\nContent-Type: application/json\r\n\r\n{}"
    )
    end = response.find(b"\r\n\r\n")
    assert wire.scan_response(response, end) == (
        200,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json",
        2,
    )
