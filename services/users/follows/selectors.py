"""Reads for the follow graph: keyset pages backed by follow_* indexes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from follows.models import Follow


def is_following(*, follower_id: int, followee_id: int) -> bool:
    return Follow.objects.filter(follower_id=follower_id, followee_id=followee_id).exists()


def followers_page(*, user_id: int, before_id: int | None, limit: int) -> list[Mapping[str, Any]]:
    """Followers newest first: up to limit+1 rows of {follow_id, profile fields} in one query."""
    rows = Follow.objects.filter(followee_id=user_id)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return list(
        rows.order_by("-id").values("id", "follower__id", "follower__username", "follower__display_name", "follower__avatar_url")[
            : limit + 1
        ]
    )


def following_page(*, user_id: int, before_id: int | None, limit: int) -> list[Mapping[str, Any]]:
    rows = Follow.objects.filter(follower_id=user_id)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return list(
        rows.order_by("-id").values("id", "followee__id", "followee__username", "followee__display_name", "followee__avatar_url")[
            : limit + 1
        ]
    )


def follower_ids_page(*, user_id: int, after_id: int | None, limit: int) -> list[int]:
    """Follower ids ascending after a keyset position (fan-out); index-only scan."""
    rows = Follow.objects.filter(followee_id=user_id)
    if after_id is not None:
        rows = rows.filter(follower_id__gt=after_id)
    return list(rows.order_by("follower_id").values_list("follower_id", flat=True)[: limit + 1])
