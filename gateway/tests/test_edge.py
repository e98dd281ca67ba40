"""Routing table, unreachable internal paths, header hygiene, body limits, token attacks.

One gateway on the real route table (gateway/routes.yaml) in front of real upstreams.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .conftest import Gateway, Upstream, eventually, free_port, problem

pytestmark = pytest.mark.timeout(60)

WWW_AUTH = 'Bearer error="invalid_token", error_description="%s"'


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, module_procs):
    tmp = tmp_path_factory.mktemp("edge")
    ups = {
        name: Upstream(name, free_port(), str(keys.path)).start() for name in ("users-1", "users-2", "feed-1", "notifications-1")
    }
    module_procs.extend(ups.values())
    env = {
        "GATEWAY_UPSTREAMS": "users={},{};feed={};notifications={}".format(
            ups["users-1"].addr, ups["users-2"].addr, ups["feed-1"].addr, ups["notifications-1"].addr
        ),
        "GATEWAY_HEADER_TIMEOUT": "1",
        "GATEWAY_BODY_TIMEOUT": "1",
        "JWKS_REFETCH_INTERVAL": "1",
    }
    g = Gateway(tmp, env).start()
    module_procs.append(g)
    # the JWKS is fetched asynchronously at start
    eventually(
        lambda: g.request("GET", "/api/v1/feed", headers=auth(keys.token())).status == 200, 10, "JWKS loaded", interval=0.1
    )
    return g


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "method,path,service",
    [
        ("POST", "/api/v1/auth/register", "users"),
        ("POST", "/api/v1/auth/login", "users"),
        ("POST", "/api/v1/auth/refresh", "users"),
        ("POST", "/api/v1/auth/logout", "users"),
        ("GET", "/api/v1/users/me", "users"),
        ("PATCH", "/api/v1/users/me", "users"),
        ("GET", "/api/v1/users/bob/followers?cursor=abc&limit=5", "users"),
        ("POST", "/api/v1/posts", "feed"),
        ("GET", "/api/v1/posts/123", "feed"),
        ("GET", "/api/v1/posts?author=bob", "feed"),
        ("DELETE", "/api/v1/posts/123/like", "feed"),
        ("GET", "/api/v1/feed", "feed"),
        ("GET", "/api/v1/notifications/unread-count", "notifications"),
        ("POST", "/api/v1/notifications/read", "notifications"),
        ("POST", "/api/v1/devices", "notifications"),
        ("DELETE", "/api/v1/devices/abc", "notifications"),
    ],
)
def test_routes_go_to_the_owning_service(gw, keys, method, path, service):
    body = b"{}" if method in ("POST", "PATCH") else None
    r = gw.request(method, path, body=body, headers=auth(keys.token()))
    assert r.status == 200, r
    assert r.upstream.rsplit("-", 1)[0] == service
    echoed = r.json()
    assert echoed["method"] == method
    assert echoed["path"] == path


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/refresh"),
        ("GET", "/.well-known/jwks.json"),
    ],
)
def test_public_routes_need_no_token(gw, method, path):
    r = gw.request(method, path, body=b"{}" if method == "POST" else None)
    assert r.status == 200
    if path == "/.well-known/jwks.json":
        assert [k["kid"] for k in r.json()["keys"]] == ["k1"]
    else:
        assert r.json()["path"] == path


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/v1/auth/login"),  # public only for POST
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/api/v1/users/me"),
        ("GET", "/api/v1/feed"),
        ("POST", "/api/v1/posts"),
        ("GET", "/api/v1/notifications"),
        ("POST", "/api/v1/devices"),
    ],
)
def test_everything_else_needs_a_token(gw, method, path):
    r = gw.request(method, path, body=b"{}" if method == "POST" else None)
    assert r.status == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == WWW_AUTH % "missing bearer token"
    assert r.json() == problem(401, "invalid-token", "Authentication failed", "missing bearer token")


@pytest.mark.parametrize(
    "path",
    [
        "/internal/users/1",
        "/metrics",
        "/health/ready",
        "/health/live",
        "/version",
        "/api/schema/",
        "/api/schema",
        "/admin/",
        "/%69nternal/users/1",
        "//internal/users/1",
        "/api/v2/posts",
        "/api/v1/postsx",
        "/api/v1",
        "/",
        "/api/v1/users",
    ],
)
def test_internal_and_unknown_paths_are_404_problems(gw, keys, path):
    r = gw.request("GET", path, headers=auth(keys.token()))
    assert r.status == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == problem(404, "not-found", "Not found", "no route for this path")


@pytest.mark.parametrize(
    "path", ["/api/v1/posts/../../internal/x", "/api/v1/posts/%2e%2e/%2e%2e/internal/x", "/api/v1/posts/..%2F..%2Finternal"]
)
def test_dot_segments_are_rejected(gw, keys, path):
    r = gw.request("GET", path, headers=auth(keys.token()))
    assert r.status == 400
    assert r.json() == problem(400, "malformed-request", "Malformed request", "path must not contain dot segments or backslashes")


def test_service_without_replicas_is_503(tmp_path, keys, procs):
    users = Upstream("users-1", free_port(), str(keys.path)).start()
    procs.append(users)
    g = Gateway(tmp_path, {"GATEWAY_UPSTREAMS": f"users={users.addr};feed=;notifications="}).start()
    procs.append(g)
    r = g.request("GET", "/.well-known/jwks.json")
    assert r.status == 200

    def past_auth():
        r = g.request("GET", "/api/v1/feed", headers=auth(keys.token()))
        return r if r.status != 401 else None

    r = eventually(past_auth, 10, "JWKS loaded", interval=0.1)
    assert r.status == 503
    assert r.json() == problem(503, "service-unavailable", "Service unavailable", "no replicas available for service feed")


def test_identity_headers_are_stripped_and_verified_identity_forwarded(gw, keys):
    token = keys.token(sub="7", username="carol")
    r = gw.request(
        "GET",
        "/api/v1/feed",
        headers={
            **auth(token),
            "X-User-Id": "1",
            "X-Username": "admin",
            "X-Forwarded-User": "admin",
            "X-Authenticated-User": "admin",
            "X-Service-Token": "forged",
            "X-Internal-Role": "admin",
            "X-Internal-Anything": "x",
            "Connection": "keep-alive, X-Custom-Hop",
            "X-Custom-Hop": "1",
            "Keep-Alive": "timeout=5",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Real-IP": "6.6.6.6",
            "Forwarded": "for=6.6.6.6",
            "X-Kept": "yes",
        },
    )
    assert r.status == 200
    h = r.json()["headers"]
    assert h["x-user-id"] == "7"
    assert h["x-username"] == "carol"
    assert h["authorization"] == f"Bearer {token}"  # services verify it again
    assert h["x-forwarded-for"] == "127.0.0.1"  # client-sent chain ignored: not a trusted proxy
    assert h["x-forwarded-proto"] == "http"
    assert h["x-kept"] == "yes"
    for name in (
        "x-forwarded-user",
        "x-authenticated-user",
        "x-service-token",
        "x-internal-role",
        "x-internal-anything",
        "x-custom-hop",
        "keep-alive",
        "x-real-ip",
        "forwarded",
    ):
        assert name not in h, name
    assert "connection" not in h  # hop-by-hop: the upstream hop is the gateway's own keep-alive


def test_identity_headers_stripped_on_public_routes_too(gw):
    r = gw.request("POST", "/api/v1/auth/login", body=b"{}", headers={"X-User-Id": "1", "X-Username": "root"})
    assert r.status == 200
    h = r.json()["headers"]
    assert "x-user-id" not in h and "x-username" not in h


def test_request_id_passed_through_when_sane_else_generated(gw, keys):
    r = gw.request("GET", "/api/v1/feed", headers={**auth(keys.token()), "X-Request-ID": "abc-123.X_y"})
    assert r.headers["x-request-id"] == "abc-123.X_y"
    assert r.json()["headers"]["x-request-id"] == "abc-123.X_y"
    for bad in ("has space", "x" * 129, "semi;colon", "<script>"):
        r = gw.request("GET", "/api/v1/feed", headers={**auth(keys.token()), "X-Request-ID": bad})
        rid = r.headers["x-request-id"]
        assert rid != bad and len(rid) == 24 and all(c in "0123456789abcdef" for c in rid)
        assert r.json()["headers"]["x-request-id"] == rid
    r = gw.request("GET", "/nowhere")
    assert len(r.headers["x-request-id"]) == 24


def test_access_log_line_per_request(gw, keys):
    gw.request("GET", "/api/v1/posts/5", headers={**auth(keys.token(sub="99")), "X-Request-ID": "log-check-1"})
    lines = eventually(
        lambda: [entry for entry in gw.access_log() if entry["request_id"] == "log-check-1"], 5, "access log line", interval=0.1
    )
    assert len(lines) == 1
    entry = lines[0]
    assert (entry["method"], entry["path"], entry["route"], entry["status"], entry["user"]) == (
        "GET",
        "/api/v1/posts/5",
        "/api/v1/posts",
        200,
        "99",
    )
    assert entry["upstream"].startswith("127.0.0.1:")
    assert isinstance(entry["duration_ms"], float)


def test_body_limit(gw, keys):
    limit = 1 << 20
    r = gw.request("POST", "/api/v1/posts", body=b"a" * limit, headers=auth(keys.token()))
    assert r.status == 200 and r.json()["body_len"] == limit
    # Judged by Content-Length before any body byte is read: the client gets its 413 without
    # having to send (and race the close with) the megabyte first.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + keys.token().encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (limit + 1)
        )
        data = _read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == problem(
        413, "payload-too-large", "Request body too large", f"request body larger than {limit} bytes"
    )


def test_chunked_request_body_is_forwarded_with_length_and_limited(gw, keys):
    token = keys.token()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        data = _read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    echoed = json.loads(body)
    assert echoed["body"] == "hello world"
    assert echoed["headers"]["content-length"] == "11"
    assert "transfer-encoding" not in echoed["headers"]
    big = b"%x\r\n%s\r\n" % (600_000, b"b" * 600_000)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + big
            + big
        )
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 413 ")


def test_chunked_response_streams_through(gw, keys):
    r = gw.request("GET", "/api/v1/feed?chunked=4", headers=auth(keys.token()))
    assert r.status == 200
    assert r.body == b"chunk-0\nchunk-1\nchunk-2\nchunk-3\n"
    assert r.headers["transfer-encoding"] == "chunked"


def test_head_and_pipelined_requests(gw, keys):
    token = keys.token().encode()
    req = b"GET /api/v1/posts/%d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            req % 1
            + b"HEAD /api/v1/posts/2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token
            + b"\r\n\r\n"
            + (req % 3).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        data = _read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b'"/api/v1/posts/1"') < data.index(b'"/api/v1/posts/3"')
    assert b'"/api/v1/posts/2"' not in data  # HEAD: no body


def test_malformed_request_is_400_problem(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /api/v1/feed HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        data = _read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/problem+json" in head
    assert json.loads(body)["status"] == 400


def test_slowloris_headers_are_cut(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /api/v1/feed HTTP/1.1\r\n")
        for _ in range(3):  # dribble a header byte every 0.6 s: never completes within the 1 s timeout
            time.sleep(0.6)
            try:
                s.sendall(b"X")
            except OSError:
                break
        data = _read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body) == problem(408, "request-timeout", "Request timeout", "request not received in time")


def test_idle_connection_without_request_is_cut(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        started = time.monotonic()
        data = _read_all(s)  # sends nothing: closed silently at the header timeout (as nginx does)
    assert data == b""
    assert time.monotonic() - started < 9  # closed by the gateway, not by our socket timeout


def test_slow_body_is_cut(gw, keys):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(
            b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + keys.token().encode()
            + b"\r\nContent-Length: 100\r\n\r\nabc"
        )
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 408 ")


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# -- token attacks --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])


def _claims(**kw):
    now = int(time.time())
    return {
        "iss": "social-users",
        "aud": "social-api",
        "sub": "42",
        "username": "alice",
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
        **kw,
    }


def _public_pem(keys) -> bytes:
    return (
        keys.private["k1"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _tampered(keys) -> str:
    header, payload, sig = keys.token().split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["sub"] = "1"
    return ".".join([header, _b64(json.dumps(forged).encode()), sig])


def _hs256_with_public_key(keys) -> str:
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    sig = hmac.new(_public_pem(keys), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


ATTACKS = {
    "garbage": (lambda k: "not-a-jwt", "malformed token"),
    "empty-parts": (lambda k: "..", "malformed token"),
    "expired": (lambda k: k.token(exp_in=-120), "token expired"),
    "tampered-signature": (_tampered, "invalid token"),
    "signature-of-other-key": (lambda k: k.token(key=Ed25519PrivateKey.generate()), "invalid token"),
    "alg-none": (lambda k: _forge({"alg": "none", "typ": "at+jwt", "kid": "k1"}, _claims()), "unsupported token algorithm"),
    "hs256-with-public-key": (_hs256_with_public_key, "unsupported token algorithm"),
    "wrong-aud": (lambda k: k.token(aud="other-api"), "token audience not accepted"),
    "wrong-iss": (lambda k: k.token(iss="evil"), "token issuer not accepted"),
    "unknown-kid": (lambda k: k.token(kid="nope", key=k.private["k1"]), "unknown signing key"),
    "missing-typ": (lambda k: k.token(typ=None), "not an access token"),
    "wrong-typ": (lambda k: k.token(typ="JWT"), "not an access token"),
    "missing-kid": (lambda k: _forge({"alg": "EdDSA", "typ": "at+jwt"}, _claims(), b"x" * 64), "token has no key id"),
    "missing-exp": (lambda k: k.token(exp=None), "invalid token"),
    "non-numeric-sub": (lambda k: k.token(sub="alice"), "invalid token subject"),
    "future-iat": (lambda k: k.token(iat=int(time.time()) + 3600), "invalid token"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_token_attacks_are_401(gw, keys, attack):
    make, detail = ATTACKS[attack]
    token = make(keys)
    for _ in range(2):  # the second time is answered from the rejection cache: same answer
        r = gw.request("GET", "/api/v1/feed", headers=auth(token))
        assert r.status == 401, (attack, r)
        assert r.headers["www-authenticate"] == WWW_AUTH % detail
        assert r.json() == problem(401, "invalid-token", "Authentication failed", detail)


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Token abc", "bearer"])
def test_malformed_authorization_header(gw, value):
    r = gw.request("GET", "/api/v1/feed", headers={"Authorization": value})
    assert r.status == 401
    assert r.json()["detail"] == "missing bearer token"


def test_lowercase_bearer_scheme_is_accepted(gw, keys):
    r = gw.request("GET", "/api/v1/feed", headers={"Authorization": f"bearer {keys.token()}"})
    assert r.status == 200


def test_unknown_kid_flood_refetches_the_jwks_at_most_once_per_interval(gw, keys):
    time.sleep(1.1)  # JWKS_REFETCH_INTERVAL=1 here (30 s by default)
    before = gw.metric("gateway_jwks_fetches_total")
    started = time.monotonic()
    forged = [keys.token(kid=f"forged-{i}", key=keys.private["k1"]) for i in range(30)]
    statuses = [gw.request("GET", "/api/v1/feed", headers=auth(t)).status for t in forged]
    elapsed = time.monotonic() - started
    assert statuses == [401] * 30
    # at most one fetch per started interval, however many forged kids arrive
    assert 1 <= gw.metric("gateway_jwks_fetches_total") - before <= int(elapsed) + 1


def test_new_key_is_picked_up_after_refetch(gw, keys):
    keys.private["k2"] = Ed25519PrivateKey.generate()
    token = keys.token(kid="k2", sub="5")
    time.sleep(1.1)  # JWKS_REFETCH_INTERVAL=1 here (30 s by default)
    assert gw.request("GET", "/api/v1/feed", headers=auth(token)).status == 401  # not published yet
    keys.publish(["k1", "k2"])
    r = eventually(
        lambda: (r := gw.request("GET", "/api/v1/feed", headers=auth(token))).status == 200 and r, 10, "the new key picked up"
    )
    assert r.json()["headers"]["x-user-id"] == "5"


def test_expired_cached_token_is_rejected(gw, keys):
    token = keys.token(exp_in=-4)  # within the 5 s leeway: accepted now, cached
    assert gw.request("GET", "/api/v1/feed", headers=auth(token)).status == 200
    time.sleep(1.5)
    r = gw.request("GET", "/api/v1/feed", headers=auth(token))
    assert r.status == 401 and r.json()["detail"] == "token expired"
