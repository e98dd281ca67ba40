"""Revoked access tokens: a small set in Redis that every service (and, later, the gateway) checks.

An access token is a self-contained JWT valid for ACCESS_TOKEN_TTL (15 min); signing alone cannot
withdraw it. So that a logged-out session or a deleted account stops working at once, the users
service (and every consumer of `user.deleted`) writes revocation markers, and
`shared.auth.AccessTokenAuthentication` refuses a token that matches one.

Key format (plain Redis keys, no Django cache prefix, in the Redis of REVOCATION_REDIS_URL, by
default REDIS_URL; every service and the gateway must point at the same one):

    auth:revoked:user:<user id>   every token of this user (`sub`): the account was deleted
    auth:revoked:sid:<sid>        every token of this login session (`sid` claim = refresh family)

The value is the Unix time of the revocation (informational); the TTL is the longest an access
token can still be valid (REVOCATION_TTL, default ACCESS_TOKEN_TTL + 60 s), after which `exp`
refuses the token anyway, so the set stays as small as the revocations of the last 16 minutes.
A check is one `EXISTS auth:revoked:user:<sub> auth:revoked:sid:<sid>` (non-zero: refuse).

Redis unreachable (docs/decisions.md, "Revocation set"): the check fails open — the token's
signature, `exp`, `iss`, `aud` still hold — logged and counted in
`auth_revocation_check_errors_total`; after an error, checks are skipped for ERROR_BACKOFF
seconds so an outage does not add a timeout to every request. Writes that fail are logged and
counted; `user.deleted` consumers write the user marker again when they handle the event.
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from prometheus_client import Counter

from shared import redis_clients

logger = logging.getLogger("shared.revocation")
USER_KEY = "auth:revoked:user:{}"
SID_KEY = "auth:revoked:sid:{}"
ERROR_BACKOFF = 1.0
DEFAULT_ACCESS_TOKEN_TTL = 900

CHECK_ERRORS = Counter(
    "auth_revocation_check_errors_total", "Revocation checks skipped because Redis failed (the token was accepted)"
)
WRITE_ERRORS = Counter("auth_revocation_write_errors_total", "Revocation markers that could not be written")
REFUSED = Counter("auth_revoked_tokens_total", "Access tokens refused as revoked", ["scope"])

_skip_until = 0.0


def _client() -> redis.Redis:
    return redis_clients.client(getattr(settings, "REVOCATION_REDIS_URL", None) or settings.REDIS_URL)


def ttl_seconds() -> int:
    configured = getattr(settings, "REVOCATION_TTL", None)
    if configured:
        return int(configured)
    return int(getattr(settings, "ACCESS_TOKEN_TTL", DEFAULT_ACCESS_TOKEN_TTL)) + 60


def _write(key: str) -> bool:
    try:
        _client().set(key, int(time.time()), ex=ttl_seconds())
        return True
    except redis.RedisError as exc:
        WRITE_ERRORS.inc()
        logger.error("revocation not written", extra={"key": key, "error": f"{type(exc).__name__}: {exc}"})
        return False


def revoke_user(user_id: int) -> bool:
    """Refuse every access token of the user until it expires (the account was deleted)."""
    return _write(USER_KEY.format(int(user_id)))


def revoke_session(sid: str) -> bool:
    """Refuse every access token of one login session (its refresh family) until it expires."""
    return _write(SID_KEY.format(sid))


def is_revoked(*, user_id: int, sid: str | None) -> bool:
    """True when the token's user or session is revoked; False (fail open) when Redis fails."""
    global _skip_until
    if time.monotonic() < _skip_until:
        CHECK_ERRORS.inc()
        return False
    keys = [USER_KEY.format(int(user_id))] + ([SID_KEY.format(sid)] if sid else [])
    try:
        found = int(_client().exists(*keys))
    except redis.RedisError as exc:
        _skip_until = time.monotonic() + ERROR_BACKOFF
        CHECK_ERRORS.inc()
        logger.warning("revocation check failed; token accepted", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    if found:
        REFUSED.labels("token").inc()
    return bool(found)
