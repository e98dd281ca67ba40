"""Post rows cached in Redis for rendering: `post:v1:{id}` → JSON of the row (created_at already
rendered), so a warm feed page costs one MGET instead of a posts query.

Freshness rules:
- content never changes; like_count does: a like/unlike deletes the key after its commit (the
  liker's next read is exact), and every entry expires after POST_CACHE_SECONDS, which bounds how
  stale a count can be when a fill that read the database just before a like lands just after
  the delete;
- a deleted post is *buried*: its key becomes a tombstone for POST_CACHE_SECONDS (set after the
  delete commits and again by the post.deleted handler). Fills are SET NX, so a fill that read
  the row before the delete cannot overwrite the tombstone, and a deleted post is never served
  from the cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

import orjson
from django.conf import settings
from django.db import connection
from redis import Redis
from timelines import store

from posts.models import Post
from shared import redis_clients

log = logging.getLogger("feed.posts")

TOMBSTONE = b"-"
_SQL = f"SELECT id, author_id, body, mentions, like_count, created_at FROM {Post._meta.db_table} WHERE id = ANY(%s)"


KEY_PREFIX = "post:v1:"  # timelines.store.page_with_rows reads these keys with a page of ids


def _key(post_id: int) -> str:
    return f"{KEY_PREFIX}{post_id}"


def iso(value) -> str:
    return value if isinstance(value, str) else value.isoformat().replace("+00:00", "Z")


def rows_by_ids(ids: Sequence[int], *, prefetched: dict[int, bytes | None] | None = None) -> dict[int, dict]:
    """{id: row} for the ids that exist: cache first (one MGET), one primary-key query for the misses.
    Without Redis every id is a miss (and nothing is filled). `prefetched`: cache values already
    read for some ids (the home read gets them with its page of ids); only the others are asked for."""
    if not ids:
        return {}
    client = store.client()
    redis: Redis | None = client
    found: dict[int, dict] = {}
    missing: list[int] = []
    prefetched = prefetched or {}
    ask = [i for i in ids if i not in prefetched]
    try:
        asked = dict(zip(ask, client.mget([_key(i) for i in ask]), strict=True)) if ask else {}
    except redis_clients.UNAVAILABLE as exc:
        log.warning("post cache unavailable, reading posts from the database: %s", exc)
        asked, redis = {}, None
    cached = [prefetched[i] if i in prefetched else asked.get(i) for i in ids]
    for post_id, raw in zip(ids, cached, strict=True):
        if raw is None:
            missing.append(post_id)
        elif raw != TOMBSTONE:
            found[post_id] = orjson.loads(raw)
    if missing:
        with connection.cursor() as cursor:
            cursor.execute(_SQL, [missing])
            fetched = [
                {"id": r[0], "author_id": r[1], "body": r[2], "mentions": r[3], "like_count": r[4], "created_at": iso(r[5])}
                for r in cursor.fetchall()
            ]
        if fetched and redis is not None:
            pipe = redis.pipeline(transaction=False)
            for row in fetched:
                pipe.set(_key(row["id"]), json.dumps(row, separators=(",", ":")), nx=True, ex=settings.POST_CACHE_SECONDS)
            redis_clients.best_effort("post cache fill", pipe.execute)
        found.update((row["id"], row) for row in fetched)
    return found


def forget(post_ids: Iterable[int]) -> None:
    """A post's like_count changed: the next read loads it again."""
    keys = [_key(i) for i in post_ids]
    if keys:
        store.client().delete(*keys)


def bury(post_ids: Iterable[int]) -> None:
    """Deleted posts: tombstones, so no reader (nor a late fill) serves them from the cache."""
    pipe = store.client().pipeline(transaction=False)
    for count, post_id in enumerate(post_ids, 1):
        pipe.set(_key(post_id), TOMBSTONE, ex=settings.POST_CACHE_SECONDS)
        if count % 1000 == 0:
            pipe.execute()
    pipe.execute()
