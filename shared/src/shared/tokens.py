"""Access-token verification shared by every service (and mirrored by the gateway).

Access tokens are JWS signed with Ed25519 (`alg: EdDSA`, pinned: any other alg, `none`
included, is rejected before a key is looked at), `typ: at+jwt` (RFC 9068), with `kid`, `iss`,
`aud`, `sub` (user id), `username`, `exp`, `iat`, `jti` and `sid` (the login session: its
refresh-token family, the key of session revocation in shared.revocation). Keys come from the
users service's JWKS over httpx, cached, and refetched on an unknown `kid` at most once per REFETCH_INTERVAL
so a flood of forged kids cannot turn into a flood of JWKS requests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
from jwt.algorithms import OKPAlgorithm

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"
LEEWAY_SECONDS = 5


class InvalidToken(Exception):
    """The token is not acceptable; the message is safe to show to the client."""


class KeySource(Protocol):
    def get_key(self, kid: str) -> Any | None: ...


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    username: str
    jti: str
    exp: int
    sid: str | None = None  # the login session (refresh-token family); absent in older tokens


def public_jwk(public_key, kid: str) -> dict:
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}


class StaticKeys:
    """Keys known in-process (the users service verifies with the keys it signs with)."""

    def __init__(self, keys: dict[str, Any]):
        self._keys = keys

    def get_key(self, kid: str):
        return self._keys.get(kid)


class JWKSKeys:
    """Public keys from a JWKS URL: cached for `ttl`, refetched on an unknown kid (rate-limited)."""

    REFETCH_INTERVAL = 30.0

    def __init__(self, url: str, *, ttl: float = 300.0, client: httpx.Client | None = None, clock=time.monotonic):
        self.url = url
        self.ttl = ttl
        self._client = client or httpx.Client(timeout=httpx.Timeout(2.0, connect=0.5))
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        response = self._client.get(self.url)
        response.raise_for_status()
        keys = {}
        for jwk in response.json().get("keys", []):
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                keys[jwk["kid"]] = OKPAlgorithm.from_jwk(jwk)
        self._keys = keys
        self._fetched_at = self._clock()

    def get_key(self, kid: str):
        now = self._clock()
        key = self._keys.get(kid)
        stale = self._fetched_at is None or now - self._fetched_at > self.ttl
        if key is not None and not stale:
            return key
        with self._lock:
            key = self._keys.get(kid)
            may_refetch = self._fetched_at is None or now - self._fetched_at > self.REFETCH_INTERVAL
            if (key is None or stale) and may_refetch:
                try:
                    self._fetch()
                except (httpx.HTTPError, ValueError):
                    if self._fetched_at is None:
                        raise InvalidToken("signing keys are unavailable") from None
                    # keep serving the keys we had: the users service being down must not log everyone out
            return self._keys.get(kid)


class VerifiedTokens:
    """Claims of the access tokens this process has verified, kept until each token expires (`exp`
    plus the leeway verification allows), so a client's next requests with the same token skip
    the signature check (about a fifth of a home timeline read's CPU). Only successful
    verifications are kept; revocation is not cached (shared.auth checks it on every request).

    At most `size` tokens: when full, the expired ones go, and if none had, all of them (the
    next request of each verifies again). Dict reads and writes are atomic under the GIL, so
    gthread workers share one instance without a lock."""

    def __init__(self, *, size: int = 10_000, clock=time.time):
        self.size = size
        self._clock = clock
        self._claims: dict[str, AccessClaims] = {}

    def get(self, token: str) -> AccessClaims | None:
        claims = self._claims.get(token)
        if claims is not None and self._clock() > claims.exp + LEEWAY_SECONDS:
            self._claims.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: AccessClaims) -> None:
        if len(self._claims) >= self.size:
            now = self._clock()
            for old, cached in list(self._claims.items()):
                if now > cached.exp + LEEWAY_SECONDS:
                    self._claims.pop(old, None)
            if len(self._claims) >= self.size:
                self._claims.clear()
        self._claims[token] = claims

    def __len__(self) -> int:
        return len(self._claims)


def verify_access_token(token: str, keys: KeySource, *, issuer: str, audience: str) -> AccessClaims:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("unsupported token algorithm")
    if header.get("typ") != TOKEN_TYPE:
        raise InvalidToken("not an access token")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("token has no key id")
    key = keys.get_key(kid)
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.PyJWTError:
        raise InvalidToken("invalid token") from None
    try:
        sid = claims.get("sid")
        return AccessClaims(
            user_id=int(claims["sub"]),
            username=str(claims.get("username", "")),
            jti=str(claims["jti"]),
            exp=int(claims["exp"]),
            sid=str(sid) if sid else None,
        )
    except (TypeError, ValueError):
        raise InvalidToken("invalid token subject") from None
