"""GET /api/v1/feed as a plain Django view: the home read without DRF's dispatch, in one Redis call.

The route's documented operation stays timelines.api.HomeFeedApi (the OpenAPI schema is generated
from it: `home_feed.cls`). This view serves the common request itself and hands every other one to
that DRF view, unchanged, which answers it as before:

- served here: a GET with a `Bearer` access token that verifies (shared.auth's per-process cache of
  verified tokens, else shared.tokens), valid `limit`/`cursor`, Redis reachable, the reader's
  timeline built. One Redis call (timelines.store.home_read, a Lua script) checks the token's
  revocation keys, reads the page of ids, the posts' cached rows, the cached profiles of their
  authors and the reader's cached big followees. Postgres only for what the caches lack: posts
  missing from the post cache, big followees not cached (and the merge when there are some), and
  liked_by_me for posts someone likes (posts.selectors.posts_render);
- handed to HomeFeedApi: any other method (HEAD, OPTIONS, …), no or a malformed Authorization
  header, a token that does not verify or is revoked (its 401), a bad limit or cursor (its 400),
  Redis or Postgres unreachable (its degradation per docs/faults.md, or its 503), a timeline not
  built yet (rebuilt from Postgres), a cursor whose score more members share than the read's slack.

Both produce the same bytes for the same page (tests/timelines/test_home_view.py): the body as
DRF's JSONRenderer writes it, `Content-Type: application/json`, `Allow`; the middlewares (ETag and
304, gzip, request id, metrics, security headers) run around either.
"""

from __future__ import annotations

import logging

import orjson
from authors import selectors as author_selectors
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from posts import cache as post_cache
from posts import selectors as post_selectors
from rest_framework.exceptions import APIException

from shared import auth, redis_clients, revocation
from shared.pagination import DEFAULT_LIMIT, encode_cursor, page_request
from shared.tokens import AccessClaims, InvalidToken, verify_access_token
from timelines import api, selectors, store

log = logging.getLogger("feed.timelines")

_drf_view = api.HomeFeedApi.as_view()
_ALLOW = "GET, HEAD, OPTIONS"  # HomeFeedApi's Allow header (tests/timelines/test_home_view.py compares them)
# what the fast path may meet and hand to the DRF view, which answers each as documented
_HANDED_OVER = (APIException, InvalidToken, OperationalError, InterfaceError, *redis_clients.UNAVAILABLE)


def _claims(request: HttpRequest) -> AccessClaims | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        return None
    claims = auth.verified_tokens.get(token)
    if claims is None:
        claims = verify_access_token(token, auth.key_source(), issuer=settings.JWT_ISSUER, audience=settings.JWT_AUDIENCE)
        auth.verified_tokens.put(token, claims)
    return claims


def _revocation_keys(claims: AccessClaims) -> list[str]:
    keys = [revocation.USER_KEY.format(int(claims.user_id))]
    if claims.sid:
        keys.append(revocation.SID_KEY.format(claims.sid))
    return keys


def _same_redis() -> bool:
    return not settings.REVOCATION_REDIS_URL or settings.REVOCATION_REDIS_URL == settings.REDIS_URL


def render(body: dict) -> bytes:
    """The bytes rest_framework.renderers.JSONRenderer writes with this project's settings (compact,
    UTF-8, U+2028/U+2029 escaped), by orjson: about a tenth of json.dumps' CPU for a page."""
    return orjson.dumps(body).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


def _page(request: HttpRequest, claims: AccessClaims) -> bytes | None:
    """The response body, or None when the DRF view is to answer."""
    if request.META.get("QUERY_STRING"):
        page = page_request(request.GET, salt=api.SALT)
        before_id = api.cursor_position(page)
        limit = page.limit
    else:
        before_id, limit = None, DEFAULT_LIMIT
    keys = _revocation_keys(claims)
    if not _same_redis() and revocation.is_revoked(user_id=claims.user_id, sid=claims.sid):
        return None
    read = store.home_read(
        user_id=claims.user_id,
        before_id=before_id,
        count=limit + 1,
        row_prefix=post_cache.KEY_PREFIX,
        profile_prefix=author_selectors.KEY_PREFIX,
        revocation_keys=keys if _same_redis() else (),
    )
    if read.revoked or not read.built or read.ids is None:
        return None
    ids = read.ids
    if len(ids) < limit + 1 and read.full:  # paged past what Redis keeps: continue from the durable table
        ids += selectors.durable_ids(user_id=claims.user_id, before_id=ids[-1] if ids else before_id, count=limit + 1 - len(ids))
    big = store.big_followees_decode(read.big)
    if big is None:
        big = selectors.big_followees(user_id=claims.user_id)
        if read.big is None:
            redis_clients.best_effort("big followees fill", store.big_followees_fill, user_id=claims.user_id, author_ids=big)
    if big:
        merged = selectors.big_authors_recent_ids(author_ids=big, before_id=before_id, count=limit + 1)
        ids = sorted(set(ids).union(merged), reverse=True)[: limit + 1]
    shown = ids[:limit]
    rows = post_cache.rows_by_ids(shown, prefetched=read.rows)
    posts, degraded = post_selectors.posts_render(
        rows=[rows[i] for i in shown if i in rows], viewer_id=claims.user_id, profiles=read.profiles
    )
    next_cursor = encode_cursor(shown[-1], salt=api.SALT) if len(ids) > limit and shown else None
    return render({"results": posts, "next_cursor": next_cursor, "degraded": degraded})


def home_feed(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    if request.method != "GET":
        return _drf_view(request, *args, **kwargs)
    try:
        claims = _claims(request)
        body = _page(request, claims) if claims is not None else None
    except _HANDED_OVER as exc:
        log.debug("home read handed to the DRF view: %s: %s", type(exc).__name__, exc)  # which logs what it meets
        claims = body = None
    if claims is None or body is None:
        return _drf_view(request, *args, **kwargs)
    request.user = auth.AuthenticatedUser(id=claims.user_id, username=claims.username)  # read by shared.conditional
    response = HttpResponse(body, content_type="application/json")
    response["Allow"] = _ALLOW
    return response


# drf-spectacular documents the route from the DRF view (rest_framework.schemas: `cls`, `initkwargs`)
home_feed.cls = api.HomeFeedApi  # type: ignore[attr-defined]
home_feed.initkwargs = {}  # type: ignore[attr-defined]
