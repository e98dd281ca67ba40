"""Author profiles for rendering posts: Redis cache first, one batch call to users for the rest.

Degrades, never fails: when users is down, slow or its circuit is open, cached profiles are
used and the rest become placeholders (`"placeholder": true`, empty username), so a timeline
still renders. Placeholders are not cached: the next read asks users again (unless the breaker
is open, in which case asking costs nothing).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from django.conf import settings
from django.core.cache import cache

from authors.client import UserSummary, users_client
from shared.http import DownstreamError

log = logging.getLogger("feed.authors")


def _key(user_id: int) -> str:
    return f"profile:v1:{user_id}"


def _public(summary: dict) -> dict:
    return {
        "id": str(summary["id"]),
        "username": summary["username"],
        "display_name": summary["display_name"],
        "avatar_url": summary["avatar_url"],
        "placeholder": False,
    }


def placeholder(user_id: int) -> dict:
    return {"id": str(user_id), "username": "", "display_name": "", "avatar_url": "", "placeholder": True}


def authors_by_ids(*, ids: list[int]) -> tuple[dict[int, dict], bool]:
    """{id: public author} for every id, and whether any had to be a placeholder (degraded)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}, False
    cached = cache.get_many([_key(i) for i in wanted])
    found = {i: _public(cached[_key(i)]) for i in wanted if _key(i) in cached}
    missing = [i for i in wanted if i not in found]
    degraded = False
    if missing:
        try:
            fetched = users_client().summaries(missing)
        except DownstreamError as exc:
            log.warning("users unavailable, rendering placeholders for %d authors: %s", len(missing), exc)
            fetched, degraded = {}, True
        cache.set_many({_key(i): asdict(s) for i, s in fetched.items()}, settings.PROFILE_CACHE_SECONDS)
        for user_id in missing:
            if user_id in fetched:
                found[user_id] = _public(asdict(fetched[user_id]))
            else:
                found[user_id] = placeholder(user_id)
    return found, degraded


def author_cache_put(*, summary: UserSummary) -> None:
    """A fresh profile (from user.updated): replace the cached one."""
    cache.set(_key(summary.id), asdict(summary), settings.PROFILE_CACHE_SECONDS)


def author_cache_forget(*, user_id: int) -> None:
    cache.delete(_key(user_id))
