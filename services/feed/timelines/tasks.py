"""Celery tasks: thin shells over timelines.services. Each takes ids, re-reads state, is idempotent."""

from __future__ import annotations

from celery import shared_task

from timelines import services


@shared_task(name="feed.fanout_post")
def fanout_post(post_id: int) -> int:
    """Walk the author's followers and queue one delivery task per page (parallel across workers)."""
    from posts.models import Post

    author_id = Post.objects.filter(id=post_id).values_list("author_id", flat=True).first()
    if author_id is None:
        return 0
    return services.fanout_pages(post_id=post_id, author_id=author_id,
                                 deliver=lambda *, post_id, user_ids: fanout_deliver.delay(post_id, user_ids))


@shared_task(name="feed.fanout_deliver")
def fanout_deliver(post_id: int, user_ids: list[int]) -> None:
    services.fanout_deliver(post_id=post_id, user_ids=user_ids)


@shared_task(name="feed.post_remove")
def post_remove(post_id: int) -> None:
    services.post_remove(post_id=post_id)


@shared_task(name="feed.author_promote")
def author_promote(author_id: int) -> None:
    services.author_promote(author_id=author_id)
