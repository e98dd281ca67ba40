"""GET /api/v1/posts?author={username} (the user timeline) as a plain Django view, below DRF's dispatch.

The route's documented operations stay posts.api.PostListCreateApi's (the OpenAPI schema is
generated from it: `posts_list_create.cls`). This view (feed_service.fastpath.PlainGet) serves the
common read itself and hands every other request to that DRF view, unchanged, which answers it as
before:

- served here: a GET with a `Bearer` access token that verifies, an `author` that names a user,
  valid `limit`/`cursor`. One Redis call checks the token's revocation keys (shared.revocation;
  when they live in another Redis, one `EXISTS` there first) and reads the name's cached author
  (authors.usernames; users' internal API only for a name Redis does not know), then the page with
  liked_by_me in one SQL statement (posts.selectors.author_posts_page); the author embedded from
  the lookup (no profile read);
- handed to PostListCreateApi: POST (create a post) and any other method, no or a malformed
  Authorization header, a token that does not verify or is revoked (its 401), no `author`, a bad
  limit or cursor (its 400), a name nobody has (its 404), Redis, users or Postgres unreachable (its
  degradation per docs/faults.md, or its 503).

Both produce the same bytes for the same page (tests/posts/test_user_timeline_view.py); the
middlewares (ETag and 304, gzip, request id, metrics, security headers) run around either.
"""

from __future__ import annotations

from authors import usernames
from django.http import HttpRequest
from feed_service import fastpath

from posts import api, selectors
from shared.http import DownstreamError
from shared.pagination import page_request, page_response
from shared.tokens import AccessClaims


def _page(request: HttpRequest, claims: AccessClaims) -> bytes | None:
    """The response body, or None when the DRF view is to answer."""
    query = request.GET
    username = query.get("author", "")
    if not username:
        return None
    page = page_request(query, salt=api.AUTHOR_SALT)
    before_id = api.cursor_position(page)
    same_redis = fastpath.same_redis()
    if not same_redis and fastpath.revoked(claims):
        return None
    try:  # the token's revocation keys ride in the name's Redis call when they live in that Redis
        found = usernames.summaries_by_username(
            [username], revocation_keys=fastpath.revocation_keys(claims) if same_redis else ()
        )
    except usernames.Revoked:
        return None
    author = found.get(username.lower())
    if author is None:
        return None
    rows, liked = selectors.author_posts_page(
        author_id=author.id, before_id=before_id, limit=page.limit, viewer_id=claims.user_id
    )
    authors = {author.id: {**author.public(), "placeholder": False}}
    body = page_response(
        rows,
        page,
        salt=api.AUTHOR_SALT,
        key=lambda row: row["id"],
        serialize=lambda batch: selectors.posts_render(rows=list(batch), viewer_id=claims.user_id, authors=authors, liked=liked)[
            0
        ],
    )
    return fastpath.render(body)


# /api/v1/posts (posts.urls): POST and what _page does not serve go to the DRF view, which documents the route
posts_list_create = fastpath.PlainGet(
    api.PostListCreateApi, page=_page, allow="GET, POST, HEAD, OPTIONS", handed_over=(DownstreamError,)
)
