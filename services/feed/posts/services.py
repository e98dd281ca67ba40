"""Writes for posts and likes. Each emits its domain event in the same transaction (outbox); timeline
work (fan-out, removal) follows from those events in feed's own worker (timelines.events)."""

from __future__ import annotations

import logging
import time

import redis
from authors import usernames
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from posts import cache as post_cache
from posts import events
from posts.models import Like, Post
from shared import ids, redis_clients
from shared.errors import DependencyUnavailable, InvalidInput, LimitReached, NotAllowed, NotFound
from shared.http import DownstreamHTTPError, DownstreamUnavailable
from shared.text import is_invisible
from shared.users_api import mention_candidates

logger = logging.getLogger(__name__)
MAX_BODY = 500


def mention_allowance_take(*, author_id: int, count: int) -> None:
    """Count `count` mentioned users against the author's MENTIONS_PER_HOUR (a Redis counter per
    clock hour); 429 `mention-rate-limited` (and the count given back) when it would go over.
    Fails open: without Redis, mentions are not limited."""
    if not count:
        return
    now = time.time()
    key = f"mentions:{author_id}:{int(now // 3600)}"
    try:
        client = redis_clients.client()
        pipe = client.pipeline(transaction=False)
        pipe.incrby(key, count)
        pipe.expire(key, 3700)
        total = int(pipe.execute()[0])
        if total > settings.MENTIONS_PER_HOUR:
            client.decrby(key, count)
        else:
            return
    except redis.RedisError as exc:
        logger.warning("mention limit unavailable; allowing", extra={"error": str(exc)})
        return
    raise LimitReached(
        f"At most {settings.MENTIONS_PER_HOUR} mentions an hour; nothing was posted. Post without mentions, or retry later.",
        code="mention-rate-limited",
        title="Too many mentions",
        retry_after=int(3600 - now % 3600),
    )


def _mentions_resolve(body: str) -> list[tuple[int, str]]:
    """(user id, username) of the @names that are users (the username cache, one users call for the
    names it does not know); unknown names stay text."""
    names = mention_candidates(body)
    if not names:
        return []
    try:
        found = usernames.summaries_by_username(names)
    except (DownstreamUnavailable, DownstreamHTTPError) as exc:
        raise DependencyUnavailable("Mentions cannot be resolved right now; nothing was posted. Retry shortly.") from exc
    return [(found[n.lower()].id, found[n.lower()].username) for n in names if n.lower() in found]


def post_create(*, author_id: int, body: str) -> Post:
    body = body.strip()
    if not 1 <= len(body) <= MAX_BODY:
        raise InvalidInput({"body": [f"Must be 1 to {MAX_BODY} characters after trimming."]})
    if is_invisible(body):  # zero-width spaces, fillers, bare combining marks: a post nobody can see
        raise InvalidInput({"body": ["Must contain visible characters."]})
    # HTTP before the write's transaction (inside the Idempotency-Key's when the request has one)
    mentioned = [(uid, name) for uid, name in _mentions_resolve(body) if uid != author_id]
    mentioned = mentioned[: settings.MENTIONS_PER_POST]  # the rest stay plain text: no link, no notification
    mention_allowance_take(author_id=author_id, count=len(mentioned))
    with transaction.atomic():
        post = Post.objects.create(
            id=ids.next_id(namespace="posts"),
            author_id=author_id,
            body=body,
            mentions=[name for _, name in mentioned],
            mentioned_user_ids=[uid for uid, _ in mentioned],
            created_at=timezone.now(),
        )
        events.post_created(post)
    return post


def _own_post(*, post_id: int, user_id: int) -> Post:
    post = Post.objects.select_for_update().filter(id=post_id).only("id", "author_id").first()
    if post is None:
        raise NotFound("No such post.")
    if post.author_id != user_id:
        raise NotAllowed("Only the author can delete a post.", code="not-post-author")
    return post


@transaction.atomic
def post_delete(*, post_id: int, user_id: int) -> None:
    post = _own_post(post_id=post_id, user_id=user_id)  # row lock: no like can slip in meanwhile
    Like.objects.filter(post_id=post.id).delete()
    Post.objects.filter(id=post.id).delete()
    events.post_deleted(post_id=post.id, author_id=post.author_id)
    # and again by the post.deleted handler (which retries until Redis takes it)
    transaction.on_commit(lambda: redis_clients.best_effort("post cache bury", post_cache.bury, [post.id]))


def _post_missing() -> NotFound:
    return NotFound("No such post.")


@transaction.atomic
def like_create(*, post_id: int, user_id: int) -> tuple[bool, int]:
    """Like (idempotent): (created, like_count). like_count is exact under concurrency: the unique
    (user, post) row decides who counts, and the counter moves in the same transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Like._meta.db_table} (post_id, user_id, created_at) "
            f"SELECT %s, %s, now() WHERE EXISTS (SELECT 1 FROM {Post._meta.db_table} WHERE id = %s) "
            "ON CONFLICT DO NOTHING RETURNING id",
            [post_id, user_id, post_id],
        )
        created = cursor.fetchone() is not None
    if created:
        updated = Post.objects.filter(id=post_id).update(like_count=F("like_count") + 1)
        if not updated:  # deleted after our insert checked it: roll the like back
            raise _post_missing()
    row = Post.objects.filter(id=post_id).values("author_id", "like_count").first()
    if row is None:
        raise _post_missing()
    if created:
        events.post_liked(post_id=post_id, author_id=row["author_id"], liker_id=user_id)
        transaction.on_commit(lambda: redis_clients.best_effort("post cache forget", post_cache.forget, [post_id]))
    return created, row["like_count"]


@transaction.atomic
def like_delete(*, post_id: int, user_id: int) -> None:
    """Unlike (idempotent: unliking a post not liked is fine); the post must exist."""
    deleted, _ = Like.objects.filter(post_id=post_id, user_id=user_id).delete()
    if deleted:
        Post.objects.filter(id=post_id).update(like_count=F("like_count") - 1)
        transaction.on_commit(lambda: redis_clients.best_effort("post cache forget", post_cache.forget, [post_id]))
    elif not Post.objects.filter(id=post_id).exists():
        raise _post_missing()
