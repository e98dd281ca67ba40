"""Actor profiles embedded in notifications: one batch call to users' internal API for the
ids not in the Redis cache. `user.updated` writes the new profile into the cache, `user.deleted`
removes it; reads only *add* to the cache, so a read racing an update cannot overwrite it."""

from __future__ import annotations

import logging
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from shared.http import DownstreamError
from shared.users_api import UsersClient, UserSummary

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def users_client() -> UsersClient:
    return UsersClient(settings.USERS_URL, caller="notifications")


def _key(user_id: int) -> str:
    """v2: the value is UserSummary.as_dict() (int id); v1 held {"id": str, ...}. A new key, not a new
    shape under the old one, so replicas of both releases can run side by side during a rollout."""
    return f"actor:v2:{user_id}"


def unknown_actor(user_id: int) -> UserSummary:
    """What is shown when the profile cannot be had (users unavailable, or the account is gone)."""
    return UserSummary(id=user_id, username="", display_name="", avatar_url="")


def actor_profiles(*, ids) -> dict[int, UserSummary]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    try:
        cached = cache.get_many([_key(i) for i in ids])
    except Exception as exc:
        logger.warning("actor cache unavailable", extra={"error": str(exc)})
        cached = {}
    profiles = {i: UserSummary(**cached[_key(i)]) for i in ids if _key(i) in cached}
    missing = [i for i in ids if i not in profiles]
    if missing:
        try:
            fetched = users_client().summaries(missing)
        except DownstreamError as exc:  # degrade: the list still renders, without fresh names
            logger.warning("actor profiles unavailable", extra={"error": str(exc), "ids": len(missing)})
            fetched = {}
        for user_id, profile in fetched.items():
            try:
                cache.add(_key(user_id), profile.as_dict(), settings.ACTOR_CACHE_SECONDS)
            except Exception:
                break
        profiles.update(fetched)
    return {i: profiles.get(i) or unknown_actor(i) for i in ids}


def actor_cache_put_on_commit(profile: UserSummary) -> None:
    def put():
        try:
            cache.set(_key(profile.id), profile.as_dict(), settings.ACTOR_CACHE_SECONDS)
        except Exception as exc:
            logger.warning("actor cache update failed", extra={"error": str(exc)})

    transaction.on_commit(put)


def actor_cache_forget_on_commit(user_id: int) -> None:
    def forget():
        try:
            cache.delete(_key(user_id))
        except Exception as exc:
            logger.warning("actor cache delete failed", extra={"error": str(exc)})

    transaction.on_commit(forget)
