"""Author profiles for rendering posts: Redis cache first, one batch call to users for the rest.

Degrades, never fails: when users is down, slow or its circuit is open, cached profiles are
used and the rest become placeholders (`"placeholder": true`, empty username), so a timeline
still renders. Placeholders are not cached: the next read asks users again (unless the breaker
is open, in which case asking costs nothing).

The cache: plain Redis keys `profile:v2:{user_id}` (no Django cache prefix, no pickle) holding the
public author as compact JSON, exactly the object a post embeds, for PROFILE_CACHE_SECONDS; replaced
by user.updated and deleted by user.deleted. Plain JSON so that the home read's one Redis call
(timelines.store.home_read, a Lua script) can return the profiles of its page's authors with the
page. Redis away: every profile is a miss (users is asked) and nothing is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict

import orjson
from django.conf import settings

from authors.client import UserSummary, users_client
from shared import redis_clients
from shared.http import DownstreamError

log = logging.getLogger("feed.authors")

KEY_PREFIX = "profile:v2:"  # timelines.store.home_read reads these keys for a page's authors


def _key(user_id: int) -> str:
    return f"{KEY_PREFIX}{user_id}"


def _public(summary: dict) -> dict:
    return {
        "id": str(summary["id"]),
        "username": summary["username"],
        "display_name": summary["display_name"],
        "avatar_url": summary["avatar_url"],
        "placeholder": False,
    }


def _encoded(public: dict) -> str:
    return json.dumps(public, ensure_ascii=False, separators=(",", ":"))


def placeholder(user_id: int) -> dict:
    return {"id": str(user_id), "username": "", "display_name": "", "avatar_url": "", "placeholder": True}


def authors_by_ids(*, ids: Iterable[int], prefetched: dict[int, bytes | None] | None = None) -> tuple[dict[int, dict], bool]:
    """{id: public author} for every id, and whether any had to be a placeholder (degraded).
    `prefetched`: cached values already read for some ids (the home read gets them with its page);
    only the others are asked from Redis."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}, False
    raw: dict[int, bytes | None] = dict(prefetched) if prefetched else {}
    ask = [i for i in wanted if i not in raw]
    if ask:
        try:
            raw.update(zip(ask, redis_clients.client().mget([_key(i) for i in ask]), strict=True))
        except redis_clients.UNAVAILABLE as exc:
            log.warning("profile cache unavailable; asking users: %s", exc)
    found: dict[int, dict] = {}
    for user_id in wanted:
        value = raw.get(user_id)
        if value is not None:
            found[user_id] = orjson.loads(value)
    missing = [i for i in wanted if i not in found]
    degraded = False
    if missing:
        try:
            fetched = users_client().summaries(missing)
        except DownstreamError as exc:
            log.warning("users unavailable, rendering placeholders for %d authors: %s", len(missing), exc)
            fetched, degraded = {}, True
        fresh = {user_id: _public(asdict(summary)) for user_id, summary in fetched.items()}
        if fresh:
            pipe = redis_clients.client().pipeline(transaction=False)
            for user_id, public in fresh.items():
                pipe.set(_key(user_id), _encoded(public), ex=settings.PROFILE_CACHE_SECONDS)
            redis_clients.best_effort("profile cache fill", pipe.execute)
        for user_id in missing:
            found[user_id] = fresh.get(user_id) or placeholder(user_id)
    return found, degraded


def author_cache_put(*, summary: UserSummary) -> None:
    """A fresh profile (from user.updated): replace the cached one."""
    redis_clients.best_effort(
        "profile cache put",
        redis_clients.client().set,
        _key(summary.id),
        _encoded(_public(asdict(summary))),
        ex=settings.PROFILE_CACHE_SECONDS,
    )


def author_cache_forget(*, user_id: int) -> None:
    redis_clients.best_effort("profile cache forget", redis_clients.client().delete, _key(user_id))
