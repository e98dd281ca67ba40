"""What the edge does for mobile and browser clients, and the hardening a security probe asked for
(issue 13): the true client IP handed to the services, checks before a body is read, trailers,
request limits below gunicorn's, no upstream `Server`, CORS, HTTP/1.0 keep-alive, revoked tokens.

Real processes: Redis, small HTTP upstreams, a real gunicorn, the gateway.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from .conftest import PY, Gateway, Upstream, _kill, eventually, free_port, wait_port

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
APP = "https://app.example"
TRUSTED = "127.0.0.2/32,10.0.0.0/8"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, module_procs, redis_url):
    tmp = tmp_path_factory.mktemp("clients")
    ups = {name: Upstream(name, free_port(), str(keys.path)).start() for name in ("users-1", "feed-1", "notifications-1")}
    module_procs.extend(ups.values())
    env = {
        "GATEWAY_UPSTREAMS": "users={};feed={};notifications={}".format(
            ups["users-1"].addr, ups["feed-1"].addr, ups["notifications-1"].addr
        ),
        "GATEWAY_HEADER_TIMEOUT": "2",
        "GATEWAY_BODY_TIMEOUT": "2",
        "GATEWAY_TRUSTED_PROXIES": TRUSTED,
        "GATEWAY_CORS_ORIGINS": f"{APP}, http://localhost:3000",
        "REDIS_URL": redis_url,
        "GATEWAY_RATELIMIT_PREFIX": f"test:clients:{uuid.uuid4().hex}:",
        "GATEWAY_REVOCATION_CACHE": "0.2",
    }
    g = Gateway(tmp, env).start()
    module_procs.append(g)
    eventually(
        lambda: g.request("GET", "/api/v1/feed", headers=auth(keys.token())).status == 200, 10, "JWKS loaded", interval=0.1
    )
    return g


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


class Reader:
    """Reads HTTP/1.x responses off one socket (Content-Length or chunked bodies, or none)."""

    def __init__(self, s: socket.socket):
        self.s, self.buf = s, b""

    def _fill(self) -> bool:
        chunk = self.s.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("closed")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_only: bool = False):
        """(status, headers {lower name: [values]}, body)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response head ({self.buf!r})")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if head_only or status in (100, 204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._exact(int(headers["content-length"][0]))
        if headers.get("transfer-encoding") == ["chunked"]:
            body = b""
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    self._line()
                    return status, headers, body
                body += self._exact(size)
                self._line()
        while self._fill():  # close-delimited
            pass
        body, self.buf = self.buf, b""
        return status, headers, body


def one(h: dict, name: str) -> str:
    assert len(h[name]) == 1, h[name]
    return h[name][0]


# -- 1. the true client IP -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source,xff,want",
    [
        # behind two trusted proxies: the right-most untrusted address of the chain
        ("127.0.0.2", "203.0.113.7, 10.0.0.5, 10.0.0.6", "203.0.113.7"),
        # a client that writes its own X-Forwarded-For before the proxies append theirs: its claim is left of the real one
        ("127.0.0.2", "6.6.6.6, 203.0.113.7, 10.0.0.5", "203.0.113.7"),
        # the peer is no trusted proxy: its X-Forwarded-For means nothing
        ("127.0.0.1", "203.0.113.7, 10.0.0.5, 10.0.0.6", "127.0.0.1"),
        # a trusted proxy that did not say who its client was: the proxy is the client
        ("127.0.0.2", None, "127.0.0.2"),
        # garbage in the chain: only what the gateway saw
        ("127.0.0.2", "203.0.113.7, not-an-ip, 10.0.0.5", "127.0.0.2"),
    ],
)
def test_services_get_the_one_resolved_client_ip(gw, keys, source, xff, want):
    rid = uuid.uuid4().hex
    headers = [
        ("Host", "x"),
        ("Authorization", f"Bearer {keys.token()}"),
        ("X-Client-IP", "1.2.3.4"),
        ("X-Real-IP", "1.2.3.5"),
        ("X-Request-ID", rid),
    ]
    if xff is not None:
        headers.append(("X-Forwarded-For", xff))
    with connect(gw.port, source) as s:
        s.sendall(b"GET /api/v1/feed HTTP/1.1\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n")
        status, _, body = Reader(s).response()
    assert status == 200
    seen = json.loads(body)["headers"]
    assert seen["x-client-ip"] == want  # the client's own X-Client-IP is never passed on
    assert "x-real-ip" not in seen
    line = eventually(lambda: [x for x in gw.access_log() if x["request_id"] == rid], 5, "access log line")
    assert line[0]["client"] == want


def test_client_ip_on_the_fast_path_is_the_peer(gw, keys):
    # a plain GET (no header the gateway rewrites) takes the fast path: the header is there too
    r = gw.request("GET", "/api/v1/feed", headers=auth(keys.token()))
    assert r.json()["headers"]["x-client-ip"] == "127.0.0.1"


# -- 5. checks before the body ---------------------------------------------------------------------


def test_chunked_body_without_a_token_is_refused_before_it_is_read(gw):
    with connect(gw.port) as s:
        # head and one chunk; the rest never comes: the 401 must not wait for it
        s.sendall(b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        status, headers, body = Reader(s).response()
    assert status == 401, body
    assert one(headers, "content-type") == "application/problem+json"


def test_chunked_body_to_an_unknown_path_is_refused_before_it_is_read(gw, keys):
    with connect(gw.port) as s:
        s.sendall(
            b"POST /nowhere HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + keys.token().encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        status, _, _ = Reader(s).response()
    assert status == 404


def test_expect_continue_is_answered_only_after_the_checks(gw, keys):
    for body_kind in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"):
        with connect(gw.port) as s:
            s.sendall(b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + body_kind + b"\r\n")
            status, _, _ = Reader(s).response()
        assert status == 401  # no "100 Continue" first: the client is not invited to send a body
        # with a valid token: 100 Continue, then the body is read and forwarded
        with connect(gw.port) as s:
            s.sendall(
                b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nAuthorization: Bearer "
                + keys.token().encode()
                + b"\r\n"
                + body_kind
                + b"\r\n"
            )
            reader = Reader(s)
            status, _, _ = reader.response()
            assert status == 100
            s.sendall(b"hello" if body_kind.startswith(b"Content-Length") else b"5\r\nhello\r\n0\r\n\r\n")
            status, _, body = reader.response()
        assert status == 200
        assert json.loads(body)["body"] == "hello"


def test_a_rate_limited_client_is_refused_before_its_body_is_read(gw):
    """Rate limits are decided on the head too: a client over its limit is not waited for (its
    chunked body never completes here) nor invited to upload (no 100 Continue)."""
    # register: burst 5 per client IP, then one per 20 s (routes.yaml); a client of its own behind
    # a trusted proxy, so no other test's requests share its bucket
    head = b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.77\r\n"

    def register(rest: bytes):
        with connect(gw.port, "127.0.0.2") as s:
            s.sendall(head + rest)
            return Reader(s).response()

    # until the bucket is spent (while the gateway's Redis connection is still being made, limits fail open)
    eventually(lambda: register(b"Content-Length: 2\r\n\r\n{}")[0] == 429, 20, "register bucket spent", interval=0)
    for rest in (
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # the rest of the body never comes
        b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    ):
        status, headers, body = register(rest)
        assert status == 429, (rest, body)
        assert one(headers, "content-type") == "application/problem+json"
        assert int(one(headers, "retry-after")) >= 1


# -- 6. trailers -----------------------------------------------------------------------------------


def test_a_request_trailer_is_dropped_and_never_replaces_the_request_id(gw, keys):
    with connect(gw.port) as s:
        s.sendall(
            b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nX-Request-ID: client-id-1\r\nAuthorization: Bearer "
            + keys.token().encode()
            + b"\r\nTransfer-Encoding: chunked\r\nTrailer: X-Request-ID, X-Extra\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Request-ID: evil\r\nX-Extra: 1\r\nX-User-Id: 1\r\n\r\n"
        )
        status, headers, body = Reader(s).response()
    assert status == 200, body
    assert one(headers, "x-request-id") == "client-id-1"
    seen = json.loads(body)
    assert seen["body"] == "hello"
    assert seen["headers"]["x-request-id"] == "client-id-1"
    assert "x-extra" not in seen["headers"] and seen["headers"]["x-user-id"] == "42"
    assert "Traceback" not in gw.log_text()


# -- 8. no upstream Server header ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/feed", "/api/v1/feed?chunked=2"])
def test_upstream_server_header_does_not_pass(gw, keys, path):
    r = gw.request("GET", path, headers=auth(keys.token()))
    assert r.status == 200
    assert "server" not in r.headers  # the upstream (http.server) sends "Server: BaseHTTP/..."


def test_the_gateways_own_answers_are_nosniff(gw, keys):
    """The gateway's errors are problem+json like the services' and, like theirs, say nosniff."""
    for path, headers, want in (
        ("/api/v1/feed", {}, 401),
        ("/nowhere", auth(keys.token()), 404),
        ("/internal/v1/users", auth(keys.token()), 404),
    ):
        r = gw.request("GET", path, headers=headers)
        assert r.status == want
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-content-type-options"] == "nosniff"
    # refused on the head alone: a request target over the limit
    status, headers, _ = _raw(gw.port, b"GET /api/v1/feed?" + b"a" * 8100 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    assert one(headers, "x-content-type-options") == "nosniff"


# -- 15. CORS --------------------------------------------------------------------------------------


def test_preflight_is_answered_at_the_edge_without_a_token(gw):
    r = gw.request(
        "OPTIONS",
        "/api/v1/posts",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert r.status == 204, r
    assert r.headers["access-control-allow-origin"] == APP
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert int(r.headers["access-control-max-age"]) > 0
    assert "Origin" in r.headers["vary"]
    assert "access-control-allow-credentials" not in r.headers  # bearer tokens, no cookies
    # an exact route restricted to POST offers POST only
    r = gw.request(
        "OPTIONS", "/api/v1/auth/login", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    )
    assert r.status == 204 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert r.headers["access-control-allow-methods"] == "POST"


def test_unknown_origins_get_no_cors_headers(gw, keys):
    r = gw.request(
        "OPTIONS", "/api/v1/posts", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert r.status == 204
    assert not [h for h in r.headers if h.startswith("access-control-")]
    r = gw.request("GET", "/api/v1/feed", headers={"Origin": "https://evil.example", **auth(keys.token())})
    assert r.status == 200
    assert not [h for h in r.headers if h.startswith("access-control-")]
    assert r.headers["vary"] == "Origin"


def test_allowed_origin_can_read_the_answer_and_its_headers(gw, keys):
    for headers in (
        {"Origin": APP, **auth(keys.token())},  # the fast path (GET, Host, Authorization, Origin)
        {"Origin": APP, "Accept": "application/json", "X-Request-ID": "abc", **auth(keys.token())},
    ):
        with connect(gw.port) as s:
            s.sendall(
                b"GET /api/v1/feed HTTP/1.1\r\nHost: x\r\n"
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
                + b"\r\n"
            )
            status, h, _ = Reader(s).response()
        assert status == 200
        assert one(h, "access-control-allow-origin") == APP
        exposed = {x.strip().lower() for x in one(h, "access-control-expose-headers").split(",")}
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after", "x-request-id"} <= exposed
        assert one(h, "vary") == "Origin"
        assert "ratelimit-limit" in h
    # the gateway's own errors carry them too: a browser script can read its 401
    r = gw.request("GET", "/api/v1/feed", headers={"Origin": APP})
    assert r.status == 401 and r.headers["access-control-allow-origin"] == APP


# -- 16. HTTP/1.0 keep-alive -----------------------------------------------------------------------


def test_http10_client_gets_delimited_answers_and_keeps_its_connection(gw, keys):
    token = keys.token().encode()
    with connect(gw.port) as s:
        reader = Reader(s)
        for path in (b"/api/v1/feed?chunked=3", b"/api/v1/feed", b"/api/v1/feed?chunked=2"):
            s.sendall(b"GET " + path + b" HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer " + token + b"\r\n\r\n")
            status, h, body = reader.response()
            assert status == 200
            assert "transfer-encoding" not in h
            assert int(one(h, "content-length")) == len(body)
            assert one(h, "connection").lower() == "keep-alive"
        assert body == b"chunk-0\nchunk-1\n"


# -- 7. limits below gunicorn's --------------------------------------------------------------------

WSGI_APP = """
import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/.well-known/jwks.json":
        with open(os.environ["JWKS_FILE"], "rb") as fh:
            body = fh.read()
    else:
        body = ("%s %s" % (environ["REQUEST_METHOD"], environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture(scope="module")
def behind_gunicorn(tmp_path_factory, keys, module_procs):
    """A real gunicorn, with the limits every service runs with (shared/gunicorn_conf.py), behind a gateway."""
    sys.path.insert(0, str(ROOT / "shared" / "src"))
    from shared import gunicorn_conf

    tmp = tmp_path_factory.mktemp("gunicorn")
    (tmp / "echo_app.py").write_text(WSGI_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(PY).with_name("gunicorn")),
            "--chdir",
            str(tmp),
            "-b",
            f"127.0.0.1:{port}",
            "-k",
            "gthread",
            # what the services run with (gunicorn's defaults for what the file does not set)
            "--limit-request-line",
            str(getattr(gunicorn_conf, "limit_request_line", 4094)),
            "--limit-request-fields",
            str(getattr(gunicorn_conf, "limit_request_fields", 100)),
            "--limit-request-field_size",
            str(getattr(gunicorn_conf, "limit_request_field_size", 8190)),
            "echo_app:app",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "JWKS_FILE": str(keys.path)},
    )

    class Proc:
        def kill(self):
            _kill(proc)

    module_procs.append(Proc())
    wait_port(port, proc=proc)
    g = Gateway(
        tmp, {"GATEWAY_UPSTREAMS": f"users=127.0.0.1:{port};feed=127.0.0.1:{port};notifications=127.0.0.1:{port}"}
    ).start()
    module_procs.append(g)
    eventually(
        lambda: g.request("GET", "/api/v1/devices/x", headers={"Authorization": f"Bearer {keys.token()}"}).status == 200,
        10,
        "JWKS loaded",
        interval=0.1,
    )
    return g


def _raw(port: int, data: bytes):
    with connect(port) as s:
        s.sendall(data)
        return Reader(s).response()


def test_oversized_requests_are_refused_by_the_gateway_with_problem_json(behind_gunicorn):
    port = behind_gunicorn.port
    path = b"/.well-known/jwks.json"  # a route without a token: without the gateway's limits gunicorn would answer
    cases = [
        (b"GET " + path + b"?" + b"a" * 8100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
        (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
        (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 0\r\n\r\n", 400),
    ]
    for data, want in cases:
        status, headers, body = _raw(port, data)
        assert status == want, (data[:60], body[:200])
        assert one(headers, "content-type") == "application/problem+json"
        assert json.loads(body)["status"] == want


def test_what_the_gateway_accepts_gunicorn_accepts(behind_gunicorn, keys):
    """Up to the gateway's limits the request reaches the service: a device token of the API's
    largest length (4096) can be deleted; the most header fields and the longest field pass."""
    authz = b"Authorization: Bearer " + keys.token().encode() + b"\r\n"
    token = b"t" * 4096
    status, _, body = _raw(
        behind_gunicorn.port, b"DELETE /api/v1/devices/" + token + b" HTTP/1.1\r\nHost: x\r\n" + authz + b"\r\n"
    )
    assert status == 200, body[:200]
    assert body == b"DELETE /api/v1/devices/" + token
    status, _, body = _raw(
        behind_gunicorn.port,
        b"GET /api/v1/devices/x?" + b"q" * 7950 + b" HTTP/1.1\r\n"
        b"Host: x\r\n" + authz + b"".join(b"X-H%d: v\r\n" % i for i in range(97)) + b"X-Big: " + b"v" * 8000 + b"\r\n\r\n",
    )
    assert status == 200, body[:200]
    assert body == b"GET /api/v1/devices/x"


# -- revoked tokens ----------------------------------------------------------------------------------


def test_revoked_session_or_user_is_refused_at_the_edge(gw, keys, redis_url):
    r = redis.Redis.from_url(redis_url)
    sid = uuid.uuid4().hex
    token = keys.token(sub="9001", sid=sid)
    other = keys.token(sub="9001", sid=uuid.uuid4().hex)  # another session of the same user
    assert gw.request("GET", "/api/v1/feed", headers=auth(token)).status == 200
    r.set(f"auth:revoked:sid:{sid}", 1, ex=60)
    got = eventually(
        lambda: (x := gw.request("GET", "/api/v1/feed", headers=auth(token))).status == 401 and x,
        5,
        "session revoked at the edge",
    )
    assert got.json()["detail"] == "token revoked"
    assert gw.request("GET", "/api/v1/feed", headers=auth(other)).status == 200
    r.set("auth:revoked:user:9001", 1, ex=60)
    eventually(lambda: gw.request("GET", "/api/v1/feed", headers=auth(other)).status == 401, 5, "user revoked")
    assert gw.request("GET", "/api/v1/feed", headers=auth(keys.token(sub="9002"))).status == 200
    assert gw.metric("gateway_revoked_tokens_total") >= 2


def test_revocation_check_fails_open_without_redis(tmp_path, keys, procs):
    up = Upstream("feed-1", free_port(), str(keys.path)).start()
    procs.append(up)
    dead = free_port()  # nothing listens there
    g = Gateway(
        tmp_path,
        {
            "GATEWAY_UPSTREAMS": f"users={up.addr};feed={up.addr};notifications={up.addr}",
            "REDIS_URL": f"redis://127.0.0.1:{dead}/0",
            "GATEWAY_REVOCATION_CACHE": "0",
        },
    ).start()
    procs.append(g)
    token = keys.token(sid="s1")
    eventually(lambda: g.request("GET", "/api/v1/feed", headers=auth(token)).status == 200, 10, "JWKS loaded", interval=0.1)
    assert [g.request("GET", "/api/v1/feed", headers=auth(token)).status for _ in range(5)] == [200] * 5
    assert g.metric("gateway_revocation_failopen_total") >= 5
    assert "revocation checking fails open" in g.log_text()
