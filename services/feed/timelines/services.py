"""Writes to home timelines: fan-out on write into Postgres (durable, bulk) and Redis (capped),
backfill and removal on follow changes, removal of deleted posts and users.

Every function is idempotent (ignore_conflicts, ZADD/ZREM, deletes), so a task that runs twice
changes nothing the second time. Postgres is written first: Redis is a cache of it.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from authors.client import FollowerIdsPage, users_client
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from posts import cache as post_cache
from posts import selectors as post_selectors
from posts.models import Like, Post

from shared import redis_clients
from timelines import followers, store
from timelines.models import AuthorStats, BigAuthorFollow, TimelineEntry

log = logging.getLogger("feed.timelines")


def _store_write_twice(write: Callable[[], object]) -> None:
    """A Redis timeline write made inside a transaction: now, so Redis being away rolls the
    transaction back and the event is retried; and again after the commit, so a timeline that a
    reader built from Postgres meanwhile (its read could not see these uncommitted rows) gets it
    too (timelines.store). The second write is idempotent; if Redis fails just then, it is logged."""
    write()

    def again() -> None:
        try:
            write()
        except redis_clients.UNAVAILABLE as exc:
            log.warning("timeline write after commit failed; a timeline built meanwhile may lack it: %s", exc)

    transaction.on_commit(again)


def _big_followees_changed(user_ids: list[int]) -> None:
    """These readers' BigAuthorFollow rows changed: their cached big followees are marked dirty
    (timelines.store), now and, inside a transaction, again after the commit (_store_write_twice:
    Redis away rolls the change back and the event or task is retried)."""
    if not user_ids:
        return
    if connection.in_atomic_block:
        _store_write_twice(lambda: store.big_followees_dirty(user_ids=user_ids))
    else:
        store.big_followees_dirty(user_ids=user_ids)


def entries_deliver(*, post_ids_by_author: dict[int, list[int]], user_ids: list[int]) -> None:
    """Write posts into these users' timelines: bulk_create in batches of FANOUT_BATCH, then Redis."""
    if not user_ids or not post_ids_by_author:
        return
    rows = [
        TimelineEntry(user_id=user_id, post_id=post_id, author_id=author_id)
        for user_id in user_ids
        for author_id, post_ids in post_ids_by_author.items()
        for post_id in post_ids
    ]
    TimelineEntry.objects.bulk_create(rows, batch_size=settings.FANOUT_BATCH, ignore_conflicts=True)
    post_ids = [p for ids in post_ids_by_author.values() for p in ids]
    _store_write_twice(lambda: store.add(user_ids=user_ids, post_ids=post_ids))


def _entries_insert(*, user_ids: list[int], post_id: int, author_id: int) -> None:
    """One post into many timelines in one statement: the ids travel as one bigint[] parameter and
    are unnested server-side (ON CONFLICT DO NOTHING keeps a redelivered page a no-op). Measured
    5-7x faster than bulk_create for a 5,000-row page, whose cost was building and compiling
    model instances, not Postgres (docs/feed.md)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TimelineEntry._meta.db_table} (user_id, post_id, author_id) "
            "SELECT u, %s, %s FROM unnest(%s::bigint[]) AS u ON CONFLICT DO NOTHING",
            [post_id, author_id, list(user_ids)],
        )


def fanout_deliver(*, post_id: int, user_ids: list[int], queued_at: float | None = None) -> bool:
    """One page of a fan-out: the post (if it still exists) into these users' timelines.

    The post row is held FOR SHARE until the rows are written: post_delete takes it FOR UPDATE, so
    a delivery either commits before the delete does (and post.deleted's removal, which runs after
    that commit, finds its rows) or sees no post and writes nothing. Redis is written after the
    commit, so a timeline a reader builds from Postgres meanwhile gets the post either from its read
    or from this write (timelines.store); if Redis fails here the task is retried, and the rows'
    ON CONFLICT DO NOTHING makes the retry a Redis write only. Called inline by post.created's
    handler (inside its inbox transaction), it writes Redis before that commit and again after it
    (_store_write_twice). A post deleted between the commit and
    the Redis write leaves a stale id there, which reads skip (they render only existing posts).
    Logs one `fanout-phase deliver` line with the time spent in each phase (bench/feed_bench.py
    reads them)."""
    t0 = time.monotonic()
    # inline in the handler's transaction: no savepoint of its own (two round trips); nothing here
    # needs a partial rollback, an error rolls the whole event back
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT author_id FROM {Post._meta.db_table} WHERE id = %s FOR SHARE", [post_id])
            row = cursor.fetchone()
        if row is None:
            return False  # deleted meanwhile: post_remove has cleaned up or will
        t1 = time.monotonic()
        _entries_insert(user_ids=user_ids, post_id=post_id, author_id=row[0])
        t2 = time.monotonic()
    t3 = time.monotonic()
    if connection.in_atomic_block:  # inline in post.created's handler: its transaction is still open
        _store_write_twice(lambda: store.add(user_ids=user_ids, post_ids=[post_id]))
    else:
        store.add(user_ids=user_ids, post_ids=[post_id])
    t4 = time.monotonic()
    wait = max(0.0, time.time() - queued_at - (t4 - t0)) if queued_at else 0.0
    log.info(
        "fanout-phase deliver post=%s n=%d wait=%.3f lock=%.3f pg=%.3f redis=%.3f commit=%.3f end=%.3f",
        post_id,
        len(user_ids),
        wait,
        t1 - t0,
        t2 - t1,
        t4 - t3,
        t3 - t2,
        time.time(),
    )
    return True


def author_is_big(*, author_id: int) -> bool:
    return AuthorStats.objects.filter(author_id=author_id, is_big=True).exists()


def walk_followers(*, author_id: int, deliver, first=None) -> tuple[int, int, float]:
    """Walk the author's followers page by page (FANOUT_PAGE ids) from users' internal API and hand
    each non-empty page to `deliver(user_ids)`. Returns (followers, pages, seconds waiting on users).
    `first`: the first page, when the caller has fetched it already.

    The first page is fetched in this thread; when there are more, the next page is fetched (in a
    helper thread) while the current one is handed over, so a long walk costs the users round trips,
    not round trips plus deliveries. A failed fetch raises here (the caller is retried; pages already
    handed over are idempotent). Used by fan-out and demotion."""
    client, limit = users_client(), settings.FANOUT_PAGE
    t = time.monotonic()
    page = first if first is not None else client.follower_ids(author_id, after=None, limit=limit)
    fetch_wait = time.monotonic() - t
    total, pages = 0, 1
    if page.ids:
        total += len(page.ids)
        deliver(page.ids)
    if page.next_after is None:  # one page (most authors): no helper thread
        return total, pages, fetch_wait
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fanout-walk") as pool:
        # each fetch runs in a copy of this thread's context: its users call stays in the caller's
        # trace (the current span is a context variable) as the first page's did
        def fetch(after: int) -> Future[FollowerIdsPage]:
            return pool.submit(contextvars.copy_context().run, client.follower_ids, author_id, after=after, limit=limit)

        pending = fetch(page.next_after)
        while True:
            t = time.monotonic()
            page = pending.result()
            fetch_wait += time.monotonic() - t
            pages += 1
            if page.next_after is not None:
                pending = fetch(page.next_after)
            if page.ids:
                deliver(page.ids)
                total += len(page.ids)
            if page.next_after is None:
                break
    return total, pages, fetch_wait


def fanout_pages(*, post_id: int, author_id: int, deliver) -> int:
    """Walk the author's followers and hand each page to `deliver(post_id=, user_ids=)` (inline, or
    a Celery task per page). Returns the follower count. The author's own timeline always gets the
    post; a big author's followers do not (hybrid).

    An author whose followers fit in one page of at most FANOUT_INLINE ids (nearly every author)
    gets the whole fan-out here, in the handler's transaction: the author and the followers in one
    INSERT and one Redis pipeline (fanout_deliver), no task per page. Each task hop costs the broker
    round trips, the worker's bookkeeping and a transaction of its own, which was most of a small
    fan-out's CPU (docs/feed.md)."""
    with connection.cursor() as cursor:  # one round trip: the post still there? the author big?
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {Post._meta.db_table} WHERE id = %s), "
            f"EXISTS (SELECT 1 FROM {AuthorStats._meta.db_table} WHERE author_id = %s AND is_big)",
            [post_id, author_id],
        )
        exists, big = cursor.fetchone()
    if not exists:
        return 0  # already deleted: nothing to fan out, no users call
    if big:
        fanout_deliver(post_id=post_id, user_ids=[author_id])
        return 0
    started = time.monotonic()
    cached, token = followers.lookup(author_id)  # a single-page author's ids, without asking users
    if cached is not None:
        first = FollowerIdsPage(ids=cached, next_after=None)
    else:
        first = users_client().follower_ids(author_id, after=None, limit=settings.FANOUT_PAGE)
        if token is not None and first.next_after is None and len(first.ids) <= settings.FANOUT_INLINE:
            followers.fill(author_id, token, first.ids)
    fetch = time.monotonic() - started
    if first.next_after is None and len(first.ids) <= settings.FANOUT_INLINE:
        if not fanout_deliver(post_id=post_id, user_ids=[author_id, *first.ids]):
            return 0  # already deleted: nothing to fan out
        total, pages = len(first.ids), 1
    else:
        if not fanout_deliver(post_id=post_id, user_ids=[author_id]):
            return 0  # already deleted: nothing to fan out
        total, pages, more = walk_followers(
            author_id=author_id, deliver=lambda user_ids: deliver(post_id=post_id, user_ids=user_ids), first=first
        )
        fetch += more
    log.info(
        "fanout-phase walk post=%s followers=%d pages=%d cached=%d fetch=%.3f total=%.3f end=%.3f",
        post_id,
        total,
        pages,
        cached is not None,
        fetch,
        time.monotonic() - started,
        time.time(),
    )
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
            [author_id, delta, delta],
        )
        count, is_big = cursor.fetchone()
    return count, is_big


def follow_apply(*, follower_id: int, followee_id: int) -> None:
    """user.followed: count the follower; big followee → remember the edge for read-time merge,
    otherwise backfill the followee's recent posts into the follower's timeline."""
    followers.followers_changed(followee_id)
    count, is_big = _followers_count_shift(author_id=followee_id, delta=1)
    if not is_big and count > settings.FANOUT_MAX_FOLLOWERS:
        AuthorStats.objects.filter(author_id=followee_id).update(is_big=True)
        is_big = True
        from timelines import tasks

        # walking every follower calls users: after commit, in its own task, not in this transaction
        transaction.on_commit(lambda: tasks.author_promote.delay(followee_id))
    if is_big:
        BigAuthorFollow.objects.bulk_create([BigAuthorFollow(user_id=follower_id, author_id=followee_id)], ignore_conflicts=True)
        _big_followees_changed([follower_id])
        return
    recent = post_selectors.recent_post_ids_by_authors(author_ids=[followee_id], before_id=None, limit=settings.BACKFILL_POSTS)
    entries_deliver(post_ids_by_author={followee_id: [post_id for post_id, _ in recent]}, user_ids=[follower_id])


def unfollow_apply(*, follower_id: int, followee_id: int) -> None:
    """user.unfollowed: the followee's posts leave the follower's timeline. A big followee whose
    count just fell below the demotion threshold is demoted (after commit, in its own task)."""
    followers.followers_changed(followee_id)
    count, is_big = _followers_count_shift(author_id=followee_id, delta=-1)
    if is_big and count < demote_below():
        transaction.on_commit(lambda: _demotion_request(author_id=followee_id))
    if BigAuthorFollow.objects.filter(user_id=follower_id, author_id=followee_id).delete()[0]:
        _big_followees_changed([follower_id])
    entries = TimelineEntry.objects.filter(user_id=follower_id, author_id=followee_id)
    post_ids = list(entries.values_list("post_id", flat=True))
    entries.delete()
    _store_write_twice(lambda: store.remove(user_ids=[follower_id], post_ids=post_ids))


def author_promote(*, author_id: int) -> None:
    """An author crossed FANOUT_MAX_FOLLOWERS: from now on its posts are pulled at read time, so
    every current follower edge is recorded (walked once from users' internal API). Idempotent."""
    AuthorStats.objects.filter(author_id=author_id).update(is_big=True)
    after = None
    while True:
        page = users_client().follower_ids(author_id, after=after, limit=settings.FANOUT_PAGE)
        BigAuthorFollow.objects.bulk_create(
            [BigAuthorFollow(user_id=u, author_id=author_id) for u in page.ids],
            batch_size=settings.FANOUT_BATCH,
            ignore_conflicts=True,
        )
        _big_followees_changed(page.ids)
        if page.next_after is None:
            break
        after = page.next_after
    log.info("author %s promoted to pull-at-read (big account)", author_id)


def demote_below() -> int:
    """A big author is demoted when its followers fall below this: FANOUT_DEMOTE_FOLLOWERS, by
    default 80% of FANOUT_MAX_FOLLOWERS. The gap is the hysteresis: an author whose count wanders
    between the two is neither promoted nor demoted again (each costs a walk of every follower)."""
    configured = settings.FANOUT_DEMOTE_FOLLOWERS
    return configured if configured is not None else settings.FANOUT_MAX_FOLLOWERS * 4 // 5


DEMOTION_REQUEST_SECONDS = 600


def _demotion_request(*, author_id: int) -> None:
    """Queue feed.author_demote once per DEMOTION_REQUEST_SECONDS per author (a Redis SET NX), not
    on every unfollow below the threshold: a demotion walks every follower. The task re-checks
    everything itself, so a second request (after the key expired) is at worst a repeated walk."""
    from timelines import tasks

    if store.client().set(f"demote:{author_id}", "1", nx=True, ex=DEMOTION_REQUEST_SECONDS):
        tasks.author_demote.delay(author_id)


def author_demote(*, author_id: int, deliver=None) -> int:
    """A big author fell below demote_below(): back to fan-out on write. Returns followers walked.

    Ordered so that no follower ever reads a page without the author's posts, and none twice:
    1. is_big is cleared (row locked, condition re-checked: a count that rose again, or a finished
       demotion, makes this a no-op). From here new posts are fanned out; the followers'
       BigAuthorFollow rows are still there, so reads keep merging the older ones.
    2. the followers are walked as for a fan-out, and each page is handed to `deliver` (a Celery
       task per page; demotion_deliver inline in tests), which backfills the author's
       BACKFILL_POSTS newest posts into those timelines (Postgres, then Redis), and only then
       deletes those followers' BigAuthorFollow rows. Between the two a reader has the posts from
       both, and the read merges them as a set: no duplicates.
    Idempotent: a redelivered task (worker died mid-walk) finds is_big already clear and rows left,
    and walks again; deliveries write with ON CONFLICT DO NOTHING. A follower no delivery reached
    (its task dead-lettered) keeps its row and so the merged posts: nothing is lost."""
    with transaction.atomic():
        row = AuthorStats.objects.select_for_update().filter(author_id=author_id).values_list("followers_count", "is_big").first()
        if row is None:
            return 0
        count, is_big = row
        if is_big and count < demote_below():
            AuthorStats.objects.filter(author_id=author_id).update(is_big=False)
        elif is_big or not BigAuthorFollow.objects.filter(author_id=author_id).exists():
            return 0  # still (or again) big, or already demoted
    post_ids = [
        post_id
        for post_id, _ in post_selectors.recent_post_ids_by_authors(
            author_ids=[author_id], before_id=None, limit=settings.BACKFILL_POSTS
        )
    ]
    deliver = deliver or _demotion_queue
    chunk = max(1, settings.DEMOTE_ROWS_PER_DELIVERY // max(1, len(post_ids)))

    def deliver_page(user_ids: list[int]) -> None:
        for start in range(0, len(user_ids), chunk):
            deliver(author_id=author_id, post_ids=post_ids, user_ids=user_ids[start : start + chunk])

    started = time.monotonic()
    total, pages, _ = walk_followers(author_id=author_id, deliver=deliver_page)
    log.info(
        "author %s demoted to fan-out: %d followers in %d pages walked in %.2f s, %d posts backfilled each",
        author_id,
        total,
        pages,
        time.monotonic() - started,
        len(post_ids),
    )
    return total


def _demotion_queue(*, author_id: int, post_ids: list[int], user_ids: list[int]) -> None:
    from timelines import tasks

    tasks.demotion_deliver.delay(author_id, post_ids, user_ids)


def demotion_backfill(*, author_id: int, post_ids: list[int], user_ids: list[int]) -> list[int]:
    """Step one of a demotion page: the author's posts (those still existing, held FOR SHARE against
    a racing delete) into these timelines, one INSERT … unnest × unnest; then, after the commit,
    into their built Redis timelines (a set built from Postgres meanwhile already has them).
    Returns the posts written. Nothing if the author is big again (re-promoted meanwhile)."""
    with transaction.atomic():
        if author_is_big(author_id=author_id):
            return []
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Post._meta.db_table} WHERE id = ANY(%s) AND author_id = %s ORDER BY id DESC FOR SHARE",
                [list(post_ids), author_id],
            )
            live = [row[0] for row in cursor.fetchall()]
            if live:
                cursor.execute(
                    f"INSERT INTO {TimelineEntry._meta.db_table} (user_id, post_id, author_id) "
                    "SELECT u, p, %s FROM unnest(%s::bigint[]) AS u CROSS JOIN unnest(%s::bigint[]) AS p "
                    "ON CONFLICT DO NOTHING",
                    [author_id, list(user_ids), live],
                )
    if live:
        store.add(user_ids=user_ids, post_ids=live)
    return live


def demotion_release(*, author_id: int, user_ids: list[int]) -> int:
    """Step two: these followers' BigAuthorFollow rows go, so their reads stop merging the author
    (its posts are in their timelines now). Not if the author is big again: the stats row is held
    FOR SHARE, so a promotion (which updates it) is either before (rows kept) or after (its walk
    records the edges again). Returns the rows deleted."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT is_big FROM {AuthorStats._meta.db_table} WHERE author_id = %s FOR SHARE", [author_id])
        row = cursor.fetchone()
        if row is not None and row[0]:
            return 0
        cursor.execute(
            f"DELETE FROM {BigAuthorFollow._meta.db_table} WHERE author_id = %s AND user_id = ANY(%s) RETURNING user_id",
            [author_id, list(user_ids)],
        )
        released = [row[0] for row in cursor.fetchall()]
        _big_followees_changed(released)
        return len(released)


def demotion_deliver(*, author_id: int, post_ids: list[int], user_ids: list[int]) -> None:
    """One chunk of a demotion: backfill, then release (in that order; see author_demote)."""
    demotion_backfill(author_id=author_id, post_ids=post_ids, user_ids=user_ids)
    demotion_release(author_id=author_id, user_ids=user_ids)


@transaction.atomic
def user_purge(*, user_id: int) -> None:
    """user.deleted: the user's posts (and their likes), their likes elsewhere, their timeline.
    Every cached follower list may hold the user (its follows went without an event per edge)."""
    followers.everyone_changed()
    post_ids = list(Post.objects.filter(author_id=user_id).values_list("id", flat=True))
    liked = list(Like.objects.filter(user_id=user_id).exclude(post_id__in=post_ids).values_list("post_id", flat=True))
    Post.objects.filter(id__in=liked).update(like_count=F("like_count") - 1)
    Like.objects.filter(user_id=user_id).delete()
    Like.objects.filter(post_id__in=post_ids).delete()
    Post.objects.filter(id__in=post_ids).delete()
    readers = list(TimelineEntry.objects.filter(post_id__in=post_ids).values_list("user_id", flat=True).distinct())
    TimelineEntry.objects.filter(post_id__in=post_ids).delete()
    TimelineEntry.objects.filter(user_id=user_id).delete()
    big_readers = list(BigAuthorFollow.objects.filter(author_id=user_id).values_list("user_id", flat=True))
    BigAuthorFollow.objects.filter(user_id=user_id).delete()
    BigAuthorFollow.objects.filter(author_id=user_id).delete()
    _big_followees_changed([user_id, *big_readers])
    AuthorStats.objects.filter(author_id=user_id).delete()

    post_cache.bury(post_ids)  # before the commit: a tombstone also stops fills racing the delete

    def redis_cleanup():
        store.drop(user_id=user_id)
        store.remove(user_ids=readers, post_ids=post_ids)
        post_cache.forget(liked)  # after the commit, or a fill could cache the old counts

    transaction.on_commit(redis_cleanup)
