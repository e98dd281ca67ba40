"""Events posts emit, through the outbox in the caller's transaction.

Timeline work (fan-out, removal) is not queued here: feed consumes its own post.created and
post.deleted through the inbox (timelines/events.py), so it is as durable as the post's commit —
a process killed right after the commit still gets its post fanned out by the relay."""

from __future__ import annotations

from posts.models import Post
from shared.events import publish


def _emit(event_type: str, data: dict) -> None:
    publish(event_type, data)  # outbox row in the caller's transaction; the relay delivers it


def post_created(post: Post) -> None:
    _emit(
        "post.created",
        {
            "post_id": str(post.id),
            "author_id": str(post.author_id),
            "mentioned_user_ids": [str(u) for u in post.mentioned_user_ids],
            "created_at": post.created_at.isoformat().replace("+00:00", "Z"),
        },
    )


def post_deleted(*, post_id: int, author_id: int) -> None:
    _emit("post.deleted", {"post_id": str(post_id), "author_id": str(author_id)})


def post_liked(*, post_id: int, author_id: int, liker_id: int) -> None:
    _emit("post.liked", {"post_id": str(post_id), "author_id": str(author_id), "liker_id": str(liker_id)})
