"""Access-token verification against a JWKS served by a real local HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import LEEWAY_SECONDS, AccessClaims, InvalidToken, JWKSKeys, VerifiedTokens, public_jwk, verify_access_token

ISSUER, AUDIENCE = "social-users", "social-api"


class JwksServer:
    def __init__(self):
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.hits = 0
        self.fail = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits += 1
                if owner.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [public_jwk(k.public_key(), kid) for kid, k in owner.keys.items()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_key(self, kid: str) -> Ed25519PrivateKey:
        self.keys[kid] = Ed25519PrivateKey.generate()
        return self.keys[kid]


@pytest.fixture
def jwks():
    server = JwksServer()
    yield server
    server.server.shutdown()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def token(key, kid, **overrides):
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "42",
        "username": "alice",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})


def test_verifies_with_fetched_key(jwks):
    key = jwks.add_key("k1")
    keys = JWKSKeys(jwks.url)
    claims = verify_access_token(token(key, "k1"), keys, issuer=ISSUER, audience=AUDIENCE)
    assert (claims.user_id, claims.username) == (42, "alice")
    verify_access_token(token(key, "k1"), keys, issuer=ISSUER, audience=AUDIENCE)
    assert jwks.hits == 1  # cached


def test_unknown_kid_refetches_once_per_interval(jwks):
    key1 = jwks.add_key("k1")
    clock = Clock()
    keys = JWKSKeys(jwks.url, clock=clock)
    verify_access_token(token(key1, "k1"), keys, issuer=ISSUER, audience=AUDIENCE)
    # a rotated-in key: the first token signed with it triggers a refetch ... once the interval has passed
    key2 = jwks.add_key("k2")
    clock.now += 1
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verify_access_token(token(key2, "k2"), keys, issuer=ISSUER, audience=AUDIENCE)
    for _ in range(5):  # a flood of unknown kids costs no more fetches
        with pytest.raises(InvalidToken):
            verify_access_token(token(key2, "forged"), keys, issuer=ISSUER, audience=AUDIENCE)
    assert jwks.hits == 1
    clock.now += JWKSKeys.REFETCH_INTERVAL + 1
    assert verify_access_token(token(key2, "k2"), keys, issuer=ISSUER, audience=AUDIENCE).user_id == 42
    assert jwks.hits == 2


def test_keeps_known_keys_when_jwks_is_down(jwks):
    key = jwks.add_key("k1")
    clock = Clock()
    keys = JWKSKeys(jwks.url, ttl=10, clock=clock)
    verify_access_token(token(key, "k1"), keys, issuer=ISSUER, audience=AUDIENCE)
    jwks.fail = True
    clock.now += 100  # stale, refetch fails: the cached key still verifies
    assert verify_access_token(token(key, "k1"), keys, issuer=ISSUER, audience=AUDIENCE).user_id == 42
    assert jwks.hits == 2


def test_no_keys_at_all_is_invalid_token(jwks):
    jwks.fail = True
    with pytest.raises(InvalidToken, match="signing keys are unavailable"):
        JWKSKeys(jwks.url).get_key("k1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": 1}, "token expired"),
        ({"aud": "x"}, "invalid token"),
        ({"iss": "x"}, "invalid token"),
        ({"sub": "abc"}, "invalid token subject"),
    ],
)
def test_claim_checks(jwks, overrides, message):
    key = jwks.add_key("k1")
    with pytest.raises(InvalidToken, match=message):
        verify_access_token(token(key, "k1", **overrides), JWKSKeys(jwks.url), issuer=ISSUER, audience=AUDIENCE)


def test_header_checks(jwks):
    key = jwks.add_key("k1")
    keys = JWKSKeys(jwks.url)
    good = {"iss": ISSUER, "aud": AUDIENCE, "sub": "1", "iat": 1, "exp": int(time.time()) + 60, "jti": "j"}
    with pytest.raises(InvalidToken, match="not an access token"):
        verify_access_token(
            jwt.encode(good, key, algorithm="EdDSA", headers={"kid": "k1", "typ": "JWT"}), keys, issuer=ISSUER, audience=AUDIENCE
        )
    with pytest.raises(InvalidToken, match="no key id"):
        verify_access_token(
            jwt.encode(good, key, algorithm="EdDSA", headers={"typ": "at+jwt"}), keys, issuer=ISSUER, audience=AUDIENCE
        )
    with pytest.raises(InvalidToken, match="unsupported token algorithm"):
        verify_access_token(
            jwt.encode(good, "x" * 32, algorithm="HS256", headers={"kid": "k1", "typ": "at+jwt"}),
            keys,
            issuer=ISSUER,
            audience=AUDIENCE,
        )
    with pytest.raises(InvalidToken, match="malformed token"):
        verify_access_token("garbage", keys, issuer=ISSUER, audience=AUDIENCE)


def test_verified_tokens_are_kept_until_they_expire(jwks):
    key = jwks.add_key("k1")
    clock = Clock()
    clock.now = float(int(time.time()))
    cache = VerifiedTokens(clock=clock)
    good = token(key, "k1", exp=int(clock.now) + 60)
    cache.put(good, verify_access_token(good, JWKSKeys(jwks.url), issuer=ISSUER, audience=AUDIENCE))
    assert cache.get(good).user_id == 42
    # the same claims under another signature are another string: never served from the cache
    assert cache.get(token(Ed25519PrivateKey.generate(), "k1", exp=int(clock.now) + 60)) is None
    clock.now += 60 + LEEWAY_SECONDS  # still inside the leeway verification allows
    assert cache.get(good) is not None
    clock.now += 1  # past it: gone, and the next verification refuses the token ("token expired")
    assert cache.get(good) is None and len(cache) == 0


def test_verified_tokens_stay_bounded():
    clock = Clock()
    cache = VerifiedTokens(size=3, clock=clock)
    for i in range(3):
        cache.put(f"t{i}", AccessClaims(user_id=i, username="u", jti="j", exp=int(clock.now) + 10 * i))
    clock.now += 5 + LEEWAY_SECONDS + 1  # t0 has expired: the next put makes room by dropping it
    cache.put("t3", AccessClaims(user_id=3, username="u", jti="j", exp=int(clock.now) + 60))
    assert [cache.get(f"t{i}") is not None for i in range(4)] == [False, True, True, True]
    cache.put("t4", AccessClaims(user_id=4, username="u", jti="j", exp=int(clock.now) + 60))  # none expired: start over
    assert len(cache) == 1 and cache.get("t4").user_id == 4
