"""Access-token verification at the edge (mirrors shared/tokens.py, without Django or httpx).

Contract (fixed by the users service): JWS `alg: EdDSA` (Ed25519) only, header `kid` and
`typ: at+jwt`; claims iss, aud, sub (decimal user id), username, exp, iat, jti.

Hot path: a verified token is cached, keyed by the token string, until its `exp`; a hit costs
one dict lookup and one comparison. Rejected tokens are cached too (bounded), so replaying a
forged token does not cost a signature check each time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any
from urllib.parse import quote

import jwt
from jwt.algorithms import OKPAlgorithm

from . import metrics

log = logging.getLogger("gateway.auth")

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"
REFETCH_INTERVAL = float(os.environ.get("JWKS_REFETCH_INTERVAL") or 30.0)  # unknown kid -> refetch at most this often
REFRESH_INTERVAL = 300.0  # background refresh of a healthy JWKS
CACHE_MAX = 100_000
BAD_CACHE_MAX = 10_000

OK, FAIL, FETCH = 0, 1, 2


class Identity:
    """A verified token's identity (an extension type when compiled: auth.pxd), cached per token."""

    def __init__(self, sub: str, username: str, exp: float, sid: str | None = None):
        self.sub = sub
        self.sid = sid  # the login session (refresh family), None in tokens without one
        # the revocation set's answer for this token (docs/gateway.md, "Revoked tokens"): revoked
        # for good once seen; "not revoked" is believed until rev_until (time.monotonic())
        self.revoked = False
        self.rev_until = 0.0
        # EXISTS auth:revoked:user:<sub> [auth:revoked:sid:<sid>], RESP-encoded once
        keys = [b"auth:revoked:user:" + sub.encode()]
        if sid:
            keys.append(b"auth:revoked:sid:" + sid.encode())
        self.revoked_check = b"*%d\r\n$6\r\nEXISTS\r\n" % (len(keys) + 1) + b"".join(b"$%d\r\n%s\r\n" % (len(k), k) for k in keys)
        self.sub_json = json.dumps(sub)  # for the access log
        self.username = username
        self.exp = exp
        # Forwarded as-is to the upstream; username percent-encoded so no byte can break a header.
        self.headers = b"X-User-Id: %s\r\nX-Username: %s\r\n" % (sub.encode(), quote(username, safe="@.+-_").encode())


class Verifier:
    """Verifies access tokens and caches the result (an extension type when compiled: auth.pxd;
    proxy.py calls check() in C)."""

    def __init__(self, *, issuer: str, audience: str, leeway: float, fetch):
        """`fetch` is an async callable returning the JWKS document bytes."""
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._fetch_doc = fetch
        self.keys: dict[str, Any] = {}  # kid -> public key
        self.cache: dict[str, Identity] = {}  # token -> Identity
        self.bad: dict[str, str] = {}  # token -> why it was refused
        self.loaded_at: float | None = None  # time.monotonic() of the last successful fetch
        self.last_fetch_attempt = -1e9
        self._inflight: asyncio.Future | None = None  # the JWKS fetch under way

    # -- hot path -------------------------------------------------------------------------
    def check(self, token: str):
        """(OK, Identity) | (FAIL, detail) | (FETCH, None): the kid is unknown and a refetch is allowed."""
        ident = self.cache.get(token)
        now = time.time()
        if ident is not None:
            if ident.exp + self.leeway > now:
                return OK, ident
            del self.cache[token]
            return FAIL, "token expired"
        detail = self.bad.get(token)
        if detail is not None:
            return FAIL, detail
        return self._verify(token, now)

    def _reject(self, token: str, detail: str):
        if len(self.bad) >= BAD_CACHE_MAX:
            self.bad.clear()
        self.bad[token] = detail
        return FAIL, detail

    def _verify(self, token: str, now: float):
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return self._reject(token, "malformed token")
        if header.get("alg") != ALGORITHM:
            return self._reject(token, "unsupported token algorithm")
        if header.get("typ") != TOKEN_TYPE:
            return self._reject(token, "not an access token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            return self._reject(token, "token has no key id")
        key = self.keys.get(kid)
        if key is None:
            if self.may_fetch():
                return FETCH, None
            # not cached as bad: the key may appear at the next allowed refetch
            return FAIL, "unknown signing key" if self.loaded_at is not None else "signing keys are unavailable"
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            return self._reject(token, "token expired")
        except jwt.InvalidAudienceError:
            return self._reject(token, "token audience not accepted")
        except jwt.InvalidIssuerError:
            return self._reject(token, "token issuer not accepted")
        except jwt.PyJWTError:
            return self._reject(token, "invalid token")
        sub, username, exp = claims.get("sub"), claims.get("username", ""), claims.get("exp")
        if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or len(sub) > 20:
            return self._reject(token, "invalid token subject")
        if not isinstance(username, str) or not isinstance(exp, (int, float)):
            return self._reject(token, "invalid token claims")
        sid = claims.get("sid")
        if sid is not None and (
            not isinstance(sid, str) or not sid or len(sid) > 128 or not sid.isascii() or not sid.isprintable() or " " in sid
        ):
            return self._reject(token, "invalid token session")
        ident = Identity(sub, username, float(exp), sid or None)
        if len(self.cache) >= CACHE_MAX:
            self._evict(now)
        self.cache[token] = ident
        return OK, ident

    def _evict(self, now: float) -> None:
        for tok in [t for t, i in self.cache.items() if i.exp + self.leeway <= now]:
            del self.cache[tok]
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()

    # -- keys -------------------------------------------------------------------------------
    def may_fetch(self) -> bool:
        if self._inflight is not None:
            return True
        # no keys yet (users service starting): retry each second; otherwise at most every 30 s
        interval = 1.0 if self.loaded_at is None else REFETCH_INTERVAL
        return time.monotonic() - self.last_fetch_attempt >= interval

    def refresh(self) -> asyncio.Future:
        """Start (or join) one JWKS fetch; the future resolves to True when keys were loaded."""
        if self._inflight is None:
            self.last_fetch_attempt = time.monotonic()
            self._inflight = asyncio.ensure_future(self._refresh())
        return self._inflight

    async def _refresh(self) -> bool:
        try:
            doc = json.loads(await self._fetch_doc())
            keys = {}
            for jwk in doc.get("keys", []):
                if (
                    isinstance(jwk, dict)
                    and jwk.get("kty") == "OKP"
                    and jwk.get("crv") == "Ed25519"
                    and isinstance(jwk.get("kid"), str)
                    and jwk.get("alg", ALGORITHM) == ALGORITHM
                ):
                    keys[jwk["kid"]] = OKPAlgorithm.from_jwk(jwk)
            if not keys:
                raise ValueError("JWKS has no Ed25519 keys")
        except Exception as exc:  # any failure keeps the keys we had
            metrics.JWKS_FETCHES.labels("error").inc()
            log.warning("JWKS fetch failed: %s", exc)
            return False
        finally:
            self._inflight = None
        if set(keys) != set(self.keys):
            # a key was removed (revoked/rotated out): forget tokens verified with old keys
            removed = set(self.keys) - set(keys)
            if removed:
                self.cache.clear()
            self.bad.clear()
            log.info("JWKS loaded: kids=%s", sorted(keys))
        self.keys = keys
        self.loaded_at = time.monotonic()
        metrics.JWKS_FETCHES.labels("ok").inc()
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Background upkeep: load keys at start (retrying every second until it works), refresh periodically."""
        backoff = 1.0
        while not stopping.is_set():
            if self.loaded_at is None:
                await self.refresh()
                if self.loaded_at is None:  # users service not up yet: retry, backing off to 30 s
                    delay, backoff = backoff, min(backoff * 2, REFETCH_INTERVAL)
                else:
                    delay = REFRESH_INTERVAL
            else:
                delay = REFRESH_INTERVAL - (time.monotonic() - self.loaded_at)
                if delay <= 0:
                    await self.refresh()
                    delay = REFRESH_INTERVAL
            try:
                await asyncio.wait_for(stopping.wait(), timeout=max(delay, 0.5))
            except TimeoutError:
                pass
