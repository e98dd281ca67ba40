"""Events posts emit. Written in the caller's transaction; timeline work runs after commit."""

from __future__ import annotations

from django.db import transaction

from posts.models import Post


def _emit(event_type: str, data: dict) -> None:
    # Until the shared events backbone (outbox + relay) lands, nothing leaves feed; see docs/feed.md.
    pass


def post_created(post: Post) -> None:
    from timelines import tasks

    _emit("post.created", {
        "post_id": str(post.id), "author_id": str(post.author_id),
        "mentioned_user_ids": [str(u) for u in post.mentioned_user_ids],
        "created_at": post.created_at.isoformat().replace("+00:00", "Z"),
    })
    transaction.on_commit(lambda: tasks.fanout_post.delay(post.id))


def post_deleted(*, post_id: int, author_id: int) -> None:
    from timelines import tasks

    _emit("post.deleted", {"post_id": str(post_id), "author_id": str(author_id)})
    transaction.on_commit(lambda: tasks.post_remove.delay(post_id))


def post_liked(*, post_id: int, author_id: int, liker_id: int) -> None:
    _emit("post.liked", {"post_id": str(post_id), "author_id": str(author_id), "liker_id": str(liker_id)})
