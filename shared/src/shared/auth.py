"""DRF authentication: end-user access tokens and service-to-service credentials.

Services never trust identity headers (`X-User-Id` and friends are ignored even though the
gateway sets them): every request's bearer token is verified here, defence in depth.

Service credential: a 60-second EdDSA JWT, `iss` = calling service, `aud` = target service,
`typ: svc+jwt`, `kid`, signed with the caller's own Ed25519 key (shared.service_keys). The
callee verifies it with the key listed under `iss` in the public key set, so a service can only
speak for itself; `aud` must be the callee; and each `/internal/` view names the callers it
admits (`allowed_callers`, checked by CallerAllowed: anyone else gets 403). The gateway never
routes /internal/. See docs/decisions.md.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework import authentication, exceptions, permissions

from shared import revocation, service_keys
from shared.tokens import (
    ALGORITHM,
    LEEWAY_SECONDS,
    InvalidToken,
    JWKSKeys,
    KeySource,
    VerifiedTokens,
    verify_access_token,
)

SERVICE_TOKEN_TYPE = "svc+jwt"
SERVICE_TOKEN_TTL = 60
log = logging.getLogger("shared.auth")


@dataclass(frozen=True)
class AuthenticatedUser:
    id: int
    username: str
    is_authenticated: bool = True
    is_service: bool = False


@dataclass(frozen=True)
class ServiceIdentity:
    name: str
    is_authenticated: bool = True
    is_service: bool = True


@lru_cache(maxsize=1)
def key_source() -> KeySource:
    """The service's KeySource: settings.JWT_KEY_SOURCE (dotted path to a factory) or the JWKS URL."""
    factory = getattr(settings, "JWT_KEY_SOURCE", None)
    if factory:
        return import_string(factory)()
    return JWKSKeys(settings.JWKS_URL)


def _bearer(request) -> str | None:
    header = authentication.get_authorization_header(request).split()
    if not header or header[0].lower() != b"bearer":
        return None
    if len(header) != 2:
        raise exceptions.AuthenticationFailed("Invalid Authorization header.")
    try:
        return header[1].decode("ascii")
    except UnicodeDecodeError:
        raise exceptions.AuthenticationFailed("Invalid Authorization header.") from None


# Tokens already verified by this process (shared.tokens.VerifiedTokens), for JWT_ISSUER/JWT_AUDIENCE.
verified_tokens = VerifiedTokens()


class AccessTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        claims = verified_tokens.get(token)
        if claims is None:
            try:
                claims = verify_access_token(token, key_source(), issuer=settings.JWT_ISSUER, audience=settings.JWT_AUDIENCE)
            except InvalidToken as exc:
                raise exceptions.AuthenticationFailed(str(exc)) from None
            verified_tokens.put(token, claims)
        # not cached: a revoked session or deleted account is refused from the next request on
        if revocation.is_revoked(user_id=claims.user_id, sid=claims.sid):
            raise exceptions.AuthenticationFailed("token revoked")
        return AuthenticatedUser(id=claims.user_id, username=claims.username), claims

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class ServiceTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        try:
            claims = verify_service_token(token, audience=settings.SERVICE_NAME)
        except InvalidToken:
            raise exceptions.AuthenticationFailed("Invalid service credential.") from None
        except ImproperlyConfigured as exc:  # no key set: refuse every caller, loudly, but never a 500
            log.error("service credentials cannot be verified: %s", exc)
            raise exceptions.AuthenticationFailed("Invalid service credential.") from None
        identity = ServiceIdentity(name=str(claims["iss"]))
        return identity, claims

    def authenticate_header(self, request):
        return 'Bearer realm="internal"'


def verify_service_token(token: str, *, audience: str, keys: service_keys.KeySet | None = None) -> dict:
    """The claims of a valid service credential for `audience`; InvalidToken otherwise. The key is
    the one listed under the token's `iss`, so a service's key cannot vouch for another name."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    kid, issuer = header.get("kid"), unverified.get("iss")
    if header.get("alg") != ALGORITHM or header.get("typ") != SERVICE_TOKEN_TYPE:
        raise InvalidToken("not a service token")
    if not isinstance(kid, str) or not isinstance(issuer, str) or not kid or not issuer:
        raise InvalidToken("token has no key id or issuer")
    key = (keys or service_keys.public_keys()).get(issuer, kid)
    if key is None:
        raise InvalidToken("unknown key for this issuer")
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        raise InvalidToken("invalid token") from None


class IsInternalService(permissions.BasePermission):
    message = "A service credential is required."

    def has_permission(self, request, view):
        return bool(getattr(request.user, "is_service", False))


class CallerAllowed(permissions.BasePermission):
    """The calling service is on the view's `allowed_callers` (none by default: fail closed)."""

    message = "This service may not call this endpoint."

    def has_permission(self, request, view):
        return getattr(request.user, "name", None) in getattr(view, "allowed_callers", frozenset())


class IsEndUser(permissions.BasePermission):
    def has_permission(self, request, view):
        user = request.user
        return bool(user is not None and getattr(user, "is_authenticated", False) and not user.is_service)


class ServiceCredential:
    """Mints (and reuses until near expiry) the credential `caller` presents to `target`, signed
    with `key` (default: this service's active key, the first of SERVICE_SIGNING_KEYS)."""

    def __init__(self, *, caller: str, target: str, key: service_keys.SigningKey | None = None, clock=time.time):
        self.caller, self.target, self._key, self._clock = caller, target, key, clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        now = self._clock()
        if self._token is None or now > self._expires - SERVICE_TOKEN_TTL / 2:
            with self._lock:
                key = self._key or service_keys.signing_keys()[0]
                exp = int(now) + SERVICE_TOKEN_TTL
                self._token = jwt.encode(
                    {"iss": self.caller, "aud": self.target, "iat": int(now), "exp": exp},
                    key.private_key,
                    algorithm=ALGORITHM,
                    headers={"typ": SERVICE_TOKEN_TYPE, "kid": key.kid},
                )
                self._expires = exp
        return self._token
