"""DRF authentication: end-user access tokens and service-to-service credentials.

Services never trust identity headers (`X-User-Id` and friends are ignored even though the
gateway sets them): every request's bearer token is verified here, defence in depth.

Service credential: a 60-second HS256 JWT, `iss` = calling service, `aud` = target service,
`typ: svc+jwt`, signed with SERVICE_TOKEN_SECRET (one secret shared by the backend services,
never by clients; the gateway never routes /internal/). See docs/decisions.md for why this
over mTLS or per-service key pairs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt
from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework import authentication, exceptions, permissions

from shared import revocation
from shared.tokens import InvalidToken, JWKSKeys, KeySource, verify_access_token

SERVICE_TOKEN_TYPE = "svc+jwt"
SERVICE_TOKEN_TTL = 60


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


class AccessTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        try:
            claims = verify_access_token(token, key_source(), issuer=settings.JWT_ISSUER,
                                         audience=settings.JWT_AUDIENCE)
        except InvalidToken as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
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
            claims = jwt.decode(
                token, settings.SERVICE_TOKEN_SECRET, algorithms=["HS256"], audience=settings.SERVICE_NAME,
                options={"require": ["exp", "iss", "aud"]},
            )
            if jwt.get_unverified_header(token).get("typ") != SERVICE_TOKEN_TYPE:
                raise jwt.InvalidTokenError("not a service token")
        except jwt.PyJWTError:
            raise exceptions.AuthenticationFailed("Invalid service credential.") from None
        identity = ServiceIdentity(name=str(claims["iss"]))
        return identity, claims

    def authenticate_header(self, request):
        return 'Bearer realm="internal"'


class IsInternalService(permissions.BasePermission):
    message = "A service credential is required."

    def has_permission(self, request, view):
        return bool(getattr(request.user, "is_service", False))


class IsEndUser(permissions.BasePermission):
    def has_permission(self, request, view):
        user = request.user
        return bool(user is not None and getattr(user, "is_authenticated", False) and not user.is_service)


class ServiceCredential:
    """Mints (and reuses until near expiry) the credential `caller` presents to `target`."""

    def __init__(self, *, caller: str, target: str, secret: str, clock=time.time):
        self.caller, self.target, self.secret, self._clock = caller, target, secret, clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        now = self._clock()
        if self._token is None or now > self._expires - SERVICE_TOKEN_TTL / 2:
            with self._lock:
                exp = int(now) + SERVICE_TOKEN_TTL
                self._token = jwt.encode({"iss": self.caller, "aud": self.target, "iat": int(now), "exp": exp},
                                         self.secret, algorithm="HS256", headers={"typ": SERVICE_TOKEN_TYPE})
                self._expires = exp
        return self._token

