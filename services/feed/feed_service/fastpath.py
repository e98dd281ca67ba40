"""Plain Django views in front of DRF views: the hottest GETs served below DRF's dispatch.

`PlainGet(DrfView, page=…, allow=…)` is the view a route points at (timelines.home, posts.user_timeline).
It serves a GET with a `Bearer` access token that verifies (shared.auth's per-process cache of
verified tokens, else shared.tokens) by calling `page(request, claims)`, which returns the response
body, or None for "the DRF view is to answer". Everything else goes to the DRF view, unchanged,
which answers it as it always did: any other method, no or a malformed Authorization header, a
token that does not verify (its 401), and whatever `page` declines or raises from HANDED_OVER plus
the view's own `handed_over` (a DRF exception such as a bad limit or cursor, Redis or Postgres
unreachable, …). The DRF view then redoes the request from the start, so its answer — problem,
degradation or 503 — is exactly the documented one.

What a served request gets is what the DRF view would write for the same data: the body as DRF's
JSONRenderer writes it (`render`), `Content-Type: application/json`, the view's `Allow`, and
`request.user` set for the middlewares that read it (shared.conditional). The route's documented
operation stays the DRF view: drf-spectacular generates the schema from `cls`/`initkwargs`, as for
any `APIView.as_view()`.

The page function checks revocation itself (shared.revocation's keys, `revocation_keys`), so that
it can ride in a Redis call the read makes anyway when the keys live in the same Redis
(`same_redis`); a revoked token is handed over, and the DRF view refuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import APIException
from rest_framework.views import APIView

from shared import auth, redis_clients, revocation
from shared.tokens import AccessClaims, InvalidToken, verify_access_token

log = logging.getLogger("feed.fastpath")

# what a page function may meet and hand to the DRF view, which answers each as documented
HANDED_OVER: tuple[type[BaseException], ...] = (
    APIException,
    InvalidToken,
    OperationalError,
    InterfaceError,
    *redis_clients.UNAVAILABLE,
)

Page = Callable[[HttpRequest, AccessClaims], bytes | None]


def claims_of(request: HttpRequest) -> AccessClaims | None:
    """The verified claims of the request's `Bearer` token; None without one (or a malformed header,
    which the DRF view refuses). Raises InvalidToken for a token that does not verify."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        return None
    claims = auth.verified_tokens.get(token)
    if claims is None:
        claims = verify_access_token(token, auth.key_source(), issuer=settings.JWT_ISSUER, audience=settings.JWT_AUDIENCE)
        auth.verified_tokens.put(token, claims)
    return claims


def revocation_keys(claims: AccessClaims) -> list[str]:
    """The revocation keys (shared.revocation) that would refuse this token: its user's, its session's."""
    keys = [revocation.USER_KEY.format(int(claims.user_id))]
    if claims.sid:
        keys.append(revocation.SID_KEY.format(claims.sid))
    return keys


def same_redis() -> bool:
    """Whether the revocation keys live in the request path's Redis (REDIS_URL), so a read's Redis
    call can check them too."""
    return not settings.REVOCATION_REDIS_URL or settings.REVOCATION_REDIS_URL == settings.REDIS_URL


def revoked(claims: AccessClaims) -> bool:
    """shared.auth's revocation check, one `EXISTS` in the revocation Redis, but raising when that
    Redis fails (the DRF view, handed the request, then fails open as documented)."""
    url = settings.REVOCATION_REDIS_URL or settings.REDIS_URL
    return bool(redis_clients.client(url).exists(*revocation_keys(claims)))


def render(body: dict) -> bytes:
    """The bytes rest_framework.renderers.JSONRenderer writes with this project's settings (compact,
    UTF-8, U+2028/U+2029 escaped), by orjson: about a tenth of json.dumps' CPU for a page."""
    return orjson.dumps(body).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


class PlainGet:
    """A route's view: GETs served by `page` when it can, every other request by `drf_view`.

    `drf_view` (the `as_view()` of `cls`) and `page` are attributes, so tests can count what is
    handed over or force it."""

    csrf_exempt = True  # as APIView.as_view(): what is handed over is DRF's, which authenticates by token

    def __init__(
        self,
        cls: type[APIView],
        *,
        page: Page,
        allow: str,
        handed_over: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.cls = cls  # drf-spectacular documents the route from the DRF view (`cls`, `initkwargs`)
        self.initkwargs: dict[str, Any] = {}
        self.drf_view = cls.as_view()
        self.page = page
        self.allow = allow  # the DRF view's Allow header (the byte-identity tests compare them)
        self.handed_over = (*HANDED_OVER, *handed_over)
        self.name = f"{page.__module__}.{page.__name__}"

    def __call__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "GET":
            return self.drf_view(request, *args, **kwargs)
        try:
            claims = claims_of(request)
            body = self.page(request, claims) if claims is not None else None
        except self.handed_over as exc:
            log.debug("%s handed to the DRF view: %s: %s", self.name, type(exc).__name__, exc)  # which logs what it meets
            claims = body = None
        if claims is None or body is None:
            return self.drf_view(request, *args, **kwargs)
        request.user = auth.AuthenticatedUser(id=claims.user_id, username=claims.username)  # read by shared.conditional
        response = HttpResponse(body, content_type="application/json")
        response["Allow"] = self.allow
        return response
