"""The compiled fast paths' byte scanners against the regex versions they replace (in process).

proxy._scan_request must accept exactly the requests proxy._match_request (FAST_REQ + FAST_OTHER +
the Host/Authorization lookups) accepts, with the same parts; proxy._scan_response may refuse
more than the old regex checks (the parser then decides) but whatever it accepts must match them:
status, head without hop-by-hop headers, Content-Length, and a reusable connection.
Runs against whichever proxy is loaded (compiled, or plain Python with GATEWAY_PURE_PYTHON=1).
"""

from __future__ import annotations

import random

from gateway import proxy

N = 20_000


def _old_response_checks(data: bytes):
    """UpstreamConn's response fast path as it was before the scanner (plain Python still uses it)."""
    if data[:9] != b"HTTP/1.1 ":
        return None
    end = data.find(b"\r\n\r\n")
    code = data[9:12]
    if not (end > 0 and code.isdigit() and code >= b"200" and data[12:13] in (b" ", b"\r")):
        return None
    head = data[:end]
    low = head.lower()
    i = low.find(b"\r\ncontent-length:")
    if not (i > 0 and low.find(b"\r\ncontent-length:", i + 17) < 0 and low.find(b"\r\ntransfer-encoding:") < 0
            and code not in (b"204", b"304")):
        return None
    j = low.find(b"\r\n", i + 17)
    clen = low[i + 17:j if j > 0 else end].strip(b" \t")
    if not clen.isdigit():
        return None
    reusable = b"close" not in low or proxy.RESP_CONN_CLOSE.search(head) is None
    return int(code), proxy.RESP_STRIP_RE.sub(b"", head), int(clen), reusable


RESP_NAMES = [b"Server", b"Date", b"Content-Type", b"Content-Length", b"content-length", b"CONTENT-LENGTH",
              b"Content-Length ", b"Connection", b"connection", b"Connection\t", b"Keep-Alive", b"Transfer-Encoding",
              b"TE", b"te", b"Trailer", b"Upgrade", b"X-Request-ID", b"x-request-id", b"Proxy-Connection",
              b"Set-Cookie", b"X-Te", b"Tea", b"Connectionx", b" Connection", b"Proxy-Authenticate",
              b"Proxy-Authorization", b"Vary", b""]
RESP_VALUES = [b"keep-alive", b"close", b"Close", b"keep-alive, close", b"closed", b"11", b" 11 ", b"abc", b"",
               b"1\x0b", b"text/html", b"chunked", b"0", b"12a", b"x\ny", b"x\ry", b"99999999999999999999", b"\t5"]


def _response(rnd: random.Random) -> bytes:
    status = rnd.choice([b"200 OK", b"201 Created", b"204 No Content", b"304 Not Modified", b"101 Switching",
                         b"500 Err", b"404", b"2x0 Bad", b"200\r"])
    lines = [rnd.choice([b"HTTP/1.1 "] * 8 + [b"HTTP/1.0 ", b"HTTP/2.0 "]) + status]
    for _ in range(rnd.randint(0, 7)):
        name = rnd.choice(RESP_NAMES)
        sep = rnd.choice([b": ", b":", b" : ", b":\t"]) if name else b""
        lines.append(name + sep + rnd.choice(RESP_VALUES))
    if rnd.random() < 0.7:
        lines.append(b"Content-Length: " + str(rnd.randint(0, 20)).encode())
    head = lines[:1] + rnd.sample(lines[1:], len(lines) - 1)
    return b"\r\n".join(head) + b"\r\n\r\n" + b"x" * rnd.randint(0, 20)


REQ_NAMES = [b"Host", b"host", b"HOST", b"Authorization", b"authorization", b"Accept", b"User-Agent", b"X-Request-ID",
             b"X-Forwarded-For", b"X-Internal-Foo", b"x-internal-", b"Connection", b"Content-Length", b"Expect",
             b"X-User-Id", b"Forwarded", b"Cookie", b"Host ", b"Ho st", b"", b"X(y", b"Accept-Encoding",
             b"Transfer-Encoding", b"Te", b"Hostx", b"Authorizations"]
REQ_VALUES = [b"example.com", b" example.com ", b"\tBearer abc\t", b"Bearer abc", b"", b"a\x01b", b"a\x7fb",
              b"\x80\xff", b"x\ry", b"a b"]


def _request(rnd: random.Random) -> bytes:
    line = (rnd.choice([b"GET", b"HEAD", b"POST", b"get", b"GETX"]) + b" "
            + rnd.choice([b"/", b"/api/v1/users/me", b"/a?b=c", b"/a b", b"a", b"/\x80", b"/%2e%2e/", b""]) + b" "
            + rnd.choice([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.10"]))
    lines = [line] + [rnd.choice(REQ_NAMES) + rnd.choice([b": ", b":", b" :"]) + rnd.choice(REQ_VALUES)
                      for _ in range(rnd.randint(0, 5))]
    return b"\r\n".join(lines) + rnd.choice([b"\r\n\r\n"] * 10 + [b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"])


def test_request_scanner_matches_the_regex_version():
    rnd = random.Random(20261126)
    accepted = 0
    for _ in range(N):
        data = _request(rnd)
        want = proxy._match_request(data)
        assert proxy._scan_request(data) == want, data
        accepted += want is not None
    assert accepted > N // 50  # the generator does produce fast-path requests


def test_response_scanner_accepts_nothing_the_old_checks_refuse():
    rnd = random.Random(20261127)
    accepted = 0
    for _ in range(N):
        data = _response(rnd)
        end = data.find(b"\r\n\r\n")
        got = proxy._scan_response(data, end) if end > 0 else None
        if got is not None:
            old = _old_response_checks(data)
            assert old is not None and old[3] and (old[0], old[1], old[2]) == got, data
            accepted += 1
    assert accepted > N // 50


def test_common_heads_take_the_fast_paths():
    request = b"GET /api/v1/users/me?x=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\nAccept: */*\r\n\r\n"
    assert proxy._scan_request(request) == (b"GET", b"/api/v1/users/me?x=1",
                                            b"Host: gw\r\nAuthorization: Bearer t\r\nAccept: */*\r\n", b"gw",
                                            b"Bearer t")
    response = (b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
                b"X-Request-ID: spoofed\r\nContent-Type: application/json\r\n\r\n{}")
    end = response.find(b"\r\n\r\n")
    assert proxy._scan_response(response, end) == (
        200, b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\nContent-Type: application/json", 2)
