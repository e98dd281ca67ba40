"""GET /api/v1/feed as a plain Django view: the home read without DRF's dispatch, in one Redis call.

The route's documented operation stays timelines.api.HomeFeedApi (the OpenAPI schema is generated
from it: `home_feed.cls`). This view (feed_service.fastpath.PlainGet) serves the common request
itself and hands every other one to that DRF view, unchanged, which answers it as before:

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

from authors import selectors as author_selectors
from django.http import HttpRequest
from feed_service import fastpath
from posts import cache as post_cache
from posts import selectors as post_selectors

from shared import redis_clients
from shared.pagination import DEFAULT_LIMIT, encode_cursor, page_request
from shared.tokens import AccessClaims
from timelines import api, selectors, store


def _page(request: HttpRequest, claims: AccessClaims) -> bytes | None:
    """The response body, or None when the DRF view is to answer."""
    if request.META.get("QUERY_STRING"):
        page = page_request(request.GET, salt=api.SALT)
        before_id = api.cursor_position(page)
        limit = page.limit
    else:
        before_id, limit = None, DEFAULT_LIMIT
    same_redis = fastpath.same_redis()
    if not same_redis and fastpath.revoked(claims):
        return None
    read = store.home_read(
        user_id=claims.user_id,
        before_id=before_id,
        count=limit + 1,
        row_prefix=post_cache.KEY_PREFIX,
        profile_prefix=author_selectors.KEY_PREFIX,
        revocation_keys=fastpath.revocation_keys(claims) if same_redis else (),
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
    return fastpath.render({"results": posts, "next_cursor": next_cursor, "degraded": degraded})


# GET /api/v1/feed (timelines.urls); the DRF view answers what _page does not serve, and documents the route
home_feed = fastpath.PlainGet(api.HomeFeedApi, page=_page, allow="GET, HEAD, OPTIONS")
