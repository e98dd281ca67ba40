"""Writes to home timelines: fan-out on write into Postgres (durable, bulk) and Redis (capped),
backfill and removal on follow changes, removal of deleted posts and users.

Every function is idempotent (ignore_conflicts, ZADD/ZREM, deletes), so a task that runs twice
changes nothing the second time. Postgres is written first: Redis is a cache of it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from authors.client import users_client
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from posts import cache as post_cache
from posts import selectors as post_selectors
from posts.models import Like, Post

from timelines import store
from timelines.models import AuthorStats, BigAuthorFollow, TimelineEntry

log = logging.getLogger("feed.timelines")


def entries_deliver(*, post_ids_by_author: dict[int, list[int]], user_ids: list[int]) -> None:
    """Write posts into these users' timelines: bulk_create in batches of FANOUT_BATCH, then Redis."""
    if not user_ids or not post_ids_by_author:
        return
    rows = [TimelineEntry(user_id=user_id, post_id=post_id, author_id=author_id)
            for user_id in user_ids for author_id, post_ids in post_ids_by_author.items() for post_id in post_ids]
    TimelineEntry.objects.bulk_create(rows, batch_size=settings.FANOUT_BATCH, ignore_conflicts=True)
    store.add(user_ids=user_ids, post_ids=[p for ids in post_ids_by_author.values() for p in ids])


def _entries_insert(*, user_ids: list[int], post_id: int, author_id: int) -> None:
    """One post into many timelines in one statement: the ids travel as one bigint[] parameter and
    are unnested server-side (ON CONFLICT DO NOTHING keeps a redelivered page a no-op). Measured
    5-7x faster than bulk_create for a 5,000-row page, whose cost was building and compiling
    model instances, not Postgres (docs/feed.md)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TimelineEntry._meta.db_table} (user_id, post_id, author_id) "
            "SELECT u, %s, %s FROM unnest(%s::bigint[]) AS u ON CONFLICT DO NOTHING",
            [post_id, author_id, list(user_ids)])


def fanout_deliver(*, post_id: int, user_ids: list[int], queued_at: float | None = None) -> bool:
    """One page of a fan-out: the post (if it still exists) into these users' timelines.

    The post row is held FOR SHARE until the rows (and Redis) are written: post_delete takes it
    FOR UPDATE, so a delivery either finishes before the delete commits (and post.deleted's
    removal, which runs after that commit, finds its rows) or sees no post and writes nothing.
    Logs one `fanout-phase deliver` line with the time spent in each phase (bench/feed_bench.py
    reads them)."""
    t0 = time.monotonic()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT author_id FROM {Post._meta.db_table} WHERE id = %s FOR SHARE", [post_id])
            row = cursor.fetchone()
        if row is None:
            return False  # deleted meanwhile: post_remove has cleaned up or will
        t1 = time.monotonic()
        _entries_insert(user_ids=user_ids, post_id=post_id, author_id=row[0])
        t2 = time.monotonic()
        store.add(user_ids=user_ids, post_ids=[post_id])
        t3 = time.monotonic()
    t4 = time.monotonic()
    wait = max(0.0, time.time() - queued_at - (t4 - t0)) if queued_at else 0.0
    log.info("fanout-phase deliver post=%s n=%d wait=%.3f lock=%.3f pg=%.3f redis=%.3f commit=%.3f end=%.3f",
             post_id, len(user_ids), wait, t1 - t0, t2 - t1, t3 - t2, t4 - t3, time.time())
    return True


def author_is_big(*, author_id: int) -> bool:
    return AuthorStats.objects.filter(author_id=author_id, is_big=True).exists()


def fanout_pages(*, post_id: int, author_id: int, deliver) -> int:
    """Walk the author's followers page by page from users' internal API and hand each page to
    `deliver(post_id=, user_ids=)` (inline, or a Celery task per page). Returns the follower count.
    The author's own timeline always gets the post; a big author's followers do not (hybrid).

    The next page is fetched (in a helper thread) while the current one is handed over, so the
    walk costs the users round trips, not round trips plus deliveries. A failed fetch raises here
    (the event is retried; pages already handed over are idempotent)."""
    if not fanout_deliver(post_id=post_id, user_ids=[author_id]):
        return 0  # already deleted: nothing to fan out
    if author_is_big(author_id=author_id):
        return 0
    client, limit = users_client(), settings.FANOUT_PAGE
    total, pages, fetch_wait, started = 0, 0, 0.0, time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fanout-walk") as pool:
        pending = pool.submit(client.follower_ids, author_id, after=None, limit=limit)
        while True:
            t = time.monotonic()
            page = pending.result()
            fetch_wait += time.monotonic() - t
            pages += 1
            if page.next_after is not None:
                pending = pool.submit(client.follower_ids, author_id, after=page.next_after, limit=limit)
            if page.ids:
                deliver(post_id=post_id, user_ids=page.ids)
                total += len(page.ids)
            if page.next_after is None:
                break
    log.info("fanout-phase walk post=%s followers=%d pages=%d fetch=%.3f total=%.3f end=%.3f",
             post_id, total, pages, fetch_wait, time.monotonic() - started, time.time())
    return total


def post_remove(*, post_id: int) -> None:
    """A deleted post leaves every timeline it was written into (the table says which)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TimelineEntry._meta.db_table} WHERE post_id = %s RETURNING user_id", [post_id])
        user_ids = [row[0] for row in cursor.fetchall()]
    store.remove(user_ids=user_ids, post_ids=[post_id])
    post_cache.bury([post_id])


@transaction.atomic
def _followers_count_shift(*, author_id: int, delta: int) -> tuple[int, bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {AuthorStats._meta.db_table} AS s (author_id, followers_count, is_big) "
            "VALUES (%s, GREATEST(%s, 0), false) ON CONFLICT (author_id) DO UPDATE "
            "SET followers_count = GREATEST(s.followers_count + %s, 0) RETURNING followers_count, is_big",
            [author_id, delta, delta])
        count, is_big = cursor.fetchone()
    return count, is_big


def follow_apply(*, follower_id: int, followee_id: int) -> None:
    """user.followed: count the follower; big followee → remember the edge for read-time merge,
    otherwise backfill the followee's recent posts into the follower's timeline."""
    count, is_big = _followers_count_shift(author_id=followee_id, delta=1)
    if not is_big and count > settings.FANOUT_MAX_FOLLOWERS:
        AuthorStats.objects.filter(author_id=followee_id).update(is_big=True)
        is_big = True
        from timelines import tasks

        # walking every follower calls users: after commit, in its own task, not in this transaction
        transaction.on_commit(lambda: tasks.author_promote.delay(followee_id))
    if is_big:
        BigAuthorFollow.objects.bulk_create([BigAuthorFollow(user_id=follower_id, author_id=followee_id)],
                                            ignore_conflicts=True)
        return
    recent = post_selectors.recent_post_ids_by_authors(author_ids=[followee_id], before_id=None,
                                                       limit=settings.BACKFILL_POSTS)
    entries_deliver(post_ids_by_author={followee_id: [post_id for post_id, _ in recent]}, user_ids=[follower_id])


def unfollow_apply(*, follower_id: int, followee_id: int) -> None:
    """user.unfollowed: the followee's posts leave the follower's timeline."""
    _followers_count_shift(author_id=followee_id, delta=-1)
    BigAuthorFollow.objects.filter(user_id=follower_id, author_id=followee_id).delete()
    entries = TimelineEntry.objects.filter(user_id=follower_id, author_id=followee_id)
    post_ids = list(entries.values_list("post_id", flat=True))
    entries.delete()
    store.remove(user_ids=[follower_id], post_ids=post_ids)


def author_promote(*, author_id: int) -> None:
    """An author crossed FANOUT_MAX_FOLLOWERS: from now on its posts are pulled at read time, so
    every current follower edge is recorded (walked once from users' internal API). Idempotent."""
    AuthorStats.objects.filter(author_id=author_id).update(is_big=True)
    after = None
    while True:
        page = users_client().follower_ids(author_id, after=after, limit=settings.FANOUT_PAGE)
        BigAuthorFollow.objects.bulk_create([BigAuthorFollow(user_id=u, author_id=author_id) for u in page.ids],
                                            batch_size=settings.FANOUT_BATCH, ignore_conflicts=True)
        if page.next_after is None:
            break
        after = page.next_after
    log.info("author %s promoted to pull-at-read (big account)", author_id)


@transaction.atomic
def user_purge(*, user_id: int) -> None:
    """user.deleted: the user's posts (and their likes), their likes elsewhere, their timeline."""
    post_ids = list(Post.objects.filter(author_id=user_id).values_list("id", flat=True))
    liked = list(Like.objects.filter(user_id=user_id).exclude(post_id__in=post_ids).values_list("post_id", flat=True))
    Post.objects.filter(id__in=liked).update(like_count=F("like_count") - 1)
    Like.objects.filter(user_id=user_id).delete()
    Like.objects.filter(post_id__in=post_ids).delete()
    Post.objects.filter(id__in=post_ids).delete()
    readers = list(TimelineEntry.objects.filter(post_id__in=post_ids).values_list("user_id", flat=True).distinct())
    TimelineEntry.objects.filter(post_id__in=post_ids).delete()
    TimelineEntry.objects.filter(user_id=user_id).delete()
    BigAuthorFollow.objects.filter(user_id=user_id).delete()
    BigAuthorFollow.objects.filter(author_id=user_id).delete()
    AuthorStats.objects.filter(author_id=user_id).delete()

    post_cache.bury(post_ids)  # before the commit: a tombstone also stops fills racing the delete

    def redis_cleanup():
        store.drop(user_id=user_id)
        store.remove(user_ids=readers, post_ids=post_ids)
        post_cache.forget(liked)  # after the commit, or a fill could cache the old counts

    transaction.on_commit(redis_cleanup)
