"""Celery tasks: thin shells over timelines.services. Each takes ids, re-reads state, is idempotent."""

from __future__ import annotations

from celery import shared_task

from timelines import services


@shared_task(
    name="feed.fanout_deliver",
    autoretry_for=(Exception,),
    max_retries=10,
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
)
def fanout_deliver(post_id: int, user_ids: list[int], queued_at: float | None = None) -> None:
    """One page of a post.created fan-out (queued by the event handler). Retried with backoff on
    any failure (database or Redis blip); late acks redeliver it if the worker dies. `queued_at`
    (epoch seconds) only feeds the queue-wait figure in the log."""
    services.fanout_deliver(post_id=post_id, user_ids=user_ids, queued_at=queued_at)


@shared_task(name="feed.post_remove")
def post_remove(post_id: int) -> None:
    services.post_remove(post_id=post_id)


@shared_task(name="feed.author_promote")
def author_promote(author_id: int) -> None:
    services.author_promote(author_id=author_id)


@shared_task(name="feed.author_demote")
def author_demote(author_id: int) -> None:
    """Walks the followers and queues one feed.demotion_deliver per chunk (see services.author_demote)."""
    services.author_demote(author_id=author_id)


@shared_task(
    name="feed.demotion_deliver",
    autoretry_for=(Exception,),
    max_retries=10,
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
)
def demotion_deliver(author_id: int, post_ids: list[int], user_ids: list[int]) -> None:
    """One chunk of a demotion: backfill the author's recent posts, then drop the followers'
    big-author rows. Retried like a fan-out page; idempotent."""
    services.demotion_deliver(author_id=author_id, post_ids=post_ids, user_ids=user_ids)
