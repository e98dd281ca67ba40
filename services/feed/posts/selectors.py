"""Reads for posts: narrow values() queries on primary keys and the post_author_id_idx index,
and one rendering path (authors hydrated in one batch, liked_by_me in at most one query) for every list."""

from __future__ import annotations

from collections.abc import Iterable

from authors.selectors import authors_by_ids
from django.db import connection

from posts import cache as post_cache
from posts.models import Like, Post

POST_FIELDS = ("id", "author_id", "body", "mentions", "like_count", "created_at")


def post_by_id(*, post_id: int) -> dict | None:
    return Post.objects.filter(id=post_id).values(*POST_FIELDS).first()


def posts_by_ids(*, ids: Iterable[int], prefetched: dict[int, bytes | None] | None = None) -> dict[int, dict]:
    """{id: post row}; ids that no longer exist are absent. From the Redis post cache (one MGET,
    none for the ids whose cached value is `prefetched`), with one primary-key query for the
    misses (posts/cache.py)."""
    return post_cache.rows_by_ids(list(ids), prefetched=prefetched)


_AUTHOR_PAGE_SQL = (
    f"SELECT {', '.join('p.' + f for f in POST_FIELDS)}, "
    f"EXISTS (SELECT 1 FROM {Like._meta.db_table} l WHERE l.user_id = %s AND l.post_id = p.id) "
    f"FROM {Post._meta.db_table} p WHERE p.author_id = %s AND p.id < %s ORDER BY p.id DESC LIMIT %s"
)
_NO_CURSOR = 2**63 - 1


def author_posts_page(*, author_id: int, before_id: int | None, limit: int, viewer_id: int) -> tuple[list[dict], set[int]]:
    """An author's posts newest first, up to limit+1 rows after the keyset position (post_author_id_idx,
    in index order), and which of them the viewer liked (like_user_post_uniq), in one statement: the
    user timeline's one query. Raw SQL on a hot path: see liked_post_ids."""
    with connection.cursor() as cursor:
        cursor.execute(_AUTHOR_PAGE_SQL, [viewer_id, author_id, _NO_CURSOR if before_id is None else before_id, limit + 1])
        found = cursor.fetchall()
    return [dict(zip(POST_FIELDS, row[:-1], strict=True)) for row in found], {row[0] for row in found if row[-1]}


def recent_post_ids_by_authors(*, author_ids: list[int], before_id: int | None, limit: int) -> list[tuple[int, int]]:
    """(post id, author id) of the newest posts of these authors, newest first (follow backfill,
    demotion backfill: one author). The feed read's big-author merge is
    timelines.selectors.big_authors_recent_ids (LATERAL, bounded per author)."""
    if not author_ids:
        return []
    rows = Post.objects.filter(author_id__in=author_ids)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return list(rows.order_by("-id").values_list("id", "author_id")[:limit])


_LIKED_SQL = f"SELECT post_id FROM {Like._meta.db_table} WHERE user_id = %s AND post_id = ANY(%s)"


def liked_post_ids(*, user_id: int, post_ids: Iterable[int]) -> set[int]:
    """On the (user_id, post_id) unique index. Raw SQL: this runs on every feed read, and compiling
    the equivalent queryset cost more CPU than executing it (the EXPLAIN test uses the queryset)."""
    with connection.cursor() as cursor:
        cursor.execute(_LIKED_SQL, [user_id, list(post_ids)])
        return {row[0] for row in cursor.fetchall()}


def posts_render(
    *,
    rows: list[dict],
    viewer_id: int,
    authors: dict[int, dict] | None = None,
    liked: set[int] | None = None,
    profiles: dict[int, bytes | None] | None = None,
) -> tuple[list[dict], bool]:
    """Post rows → API posts with author embedded and liked_by_me; and whether authors degraded.
    At most two queries-or-calls whatever the page size: one author batch (none when `profiles`,
    cached values read with the page, has them all) and one liked_by_me query, asked only about
    the posts someone likes (like_count > 0): a post nobody likes is not liked by the viewer. The
    answer is as fresh as the like_count beside it (from Postgres, or the post cache: posts/cache.py).
    A caller that already has the authors (the user timeline: its author's summary) or knows what
    the viewer liked (a post just created: nothing) passes them and skips that call."""
    if not rows:
        return [], False
    degraded = False
    if authors is None or any(row["author_id"] not in authors for row in rows):
        authors, degraded = authors_by_ids(ids=[row["author_id"] for row in rows], prefetched=profiles)
    if liked is None:
        liked_somewhere = [row["id"] for row in rows if row["like_count"] > 0]
        liked = liked_post_ids(user_id=viewer_id, post_ids=liked_somewhere) if liked_somewhere else set()
    return [
        {
            "id": str(row["id"]),
            "author": authors[row["author_id"]],
            "body": row["body"],
            "mentions": row["mentions"],
            "like_count": row["like_count"],
            "liked_by_me": row["id"] in liked,
            "created_at": post_cache.iso(row["created_at"]),
        }
        for row in rows
    ], degraded
