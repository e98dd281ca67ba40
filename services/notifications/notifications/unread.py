"""Unread counts served from Redis, correct after every change.

A cached count is stored with the generation it was computed at; every change bumps the
user's generation after its transaction commits. A reader uses the cached count only when its
generation is current, so a count computed concurrently with a change (before or after its
commit) is never served after the change: no stale window, one MGET per read.
If Redis is unreachable the count comes from the database (an index-only scan).
"""

from __future__ import annotations

import logging
from typing import cast

import redis
from django.conf import settings
from django.db import transaction

from notifications.models import Notification
from shared.redis_clients import client as _redis

logger = logging.getLogger(__name__)


def _keys(user_id: int) -> tuple[str, str]:
    return f"notifications:unread:gen:{user_id}", f"notifications:unread:count:{user_id}"


def unread_count_from_db(*, user_id: int) -> int:
    return Notification.objects.filter(recipient_id=user_id, read_at__isnull=True).count()


def unread_count(*, user_id: int) -> int:
    gen_key, count_key = _keys(user_id)
    try:
        raw_generation, cached = cast("list[bytes | None]", _redis().mget(gen_key, count_key))
    except redis.RedisError as exc:
        logger.warning("unread cache unavailable", extra={"error": str(exc)})
        return unread_count_from_db(user_id=user_id)
    generation = (raw_generation or b"0").decode()
    if cached is not None:
        cached_gen, _, value = cached.decode().partition(":")
        if cached_gen == generation:
            return int(value)
    count = unread_count_from_db(user_id=user_id)
    try:
        _redis().set(count_key, f"{generation}:{count}", ex=settings.UNREAD_CACHE_SECONDS)
    except redis.RedisError:
        pass
    return count


def unread_changed(*user_ids: int) -> None:
    """Call in the transaction that changed unread state; invalidates after it commits."""
    ids = sorted(set(user_ids))
    if not ids:
        return

    def bump() -> None:
        try:
            pipe = _redis().pipeline(transaction=False)
            for user_id in ids:
                pipe.incr(_keys(user_id)[0])
            pipe.execute()
        except redis.RedisError as exc:  # bounded: cached counts expire after UNREAD_CACHE_SECONDS
            logger.warning("unread invalidation failed", extra={"error": str(exc), "users": len(ids)})

    transaction.on_commit(bump)
