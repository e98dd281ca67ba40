"""Fan-out, hybrid, backfill, removal and reading the home timeline, with the users service real
and the service functions called directly (the Celery tasks are thin shells over them; see
test_worker.py for the same paths through a real worker)."""

import json

import pytest
from django.test import override_settings
from posts import cache as post_cache
from posts.models import Post
from timelines import selectors, services, store
from timelines.models import AuthorStats, BigAuthorFollow, TimelineEntry

from shared import ids
from shared.testing import QueryCounter, assert_problem, explain

pytestmark = pytest.mark.django_db


def post(person, body="hello") -> int:
    response = person.api.post("/api/v1/posts", data=json.dumps({"body": body}), content_type="application/json")
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def fan_out(post_id: int) -> int:
    author_id = Post.objects.get(id=post_id).author_id
    return services.fanout_pages(post_id=post_id, author_id=author_id, deliver=services.fanout_deliver)


def feed_ids(person, **params) -> list[int]:
    response = person.api.get("/api/v1/feed", params)
    assert response.status_code == 200, response.content
    return [int(p["id"]) for p in response.json()["results"]]


def follow(follower, followee):
    follower.follow(followee)
    services.follow_apply(follower_id=follower.id, followee_id=followee.id)  # what the user.followed handler does


def test_fanout_writes_every_follower_timeline_and_the_authors_own(person, settings):
    settings.FANOUT_PAGE = 2  # three followers: two pages from users' internal API
    author = person("author")
    followers = [person("fan") for _ in range(3)]
    stranger = person("stranger")
    for fan in followers:
        fan.follow(author)
    post_id = post(author)
    assert fan_out(post_id) == 3
    assert sorted(TimelineEntry.objects.filter(post_id=post_id).values_list("user_id", flat=True)) == sorted(
        [author.id, *(f.id for f in followers)]
    )
    for reader in [author, *followers]:
        assert feed_ids(reader) == [post_id]
    assert feed_ids(stranger) == []


def test_fanout_twice_changes_nothing(person):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    post_id = post(author)
    fan_out(post_id)
    feed_ids(fan)  # builds fan's Redis timeline
    fan_out(post_id)
    assert TimelineEntry.objects.filter(post_id=post_id).count() == 2
    assert store.client().zcard(store.key(fan.id)) == 2  # sentinel + the post


def test_feed_renders_posts_with_authors_likes_and_pages(person):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    posted = [post(author, f"p{i}") for i in range(5)]
    for post_id in posted:
        fan_out(post_id)
    fan.api.post(f"/api/v1/posts/{posted[-1]}/like")
    first = fan.api.get("/api/v1/feed", {"limit": 2}).json()
    assert [int(p["id"]) for p in first["results"]] == posted[::-1][:2]
    top = first["results"][0]
    assert top["author"] == author.summary()
    assert (top["body"], top["like_count"], top["liked_by_me"], top["mentions"]) == ("p4", 1, True, [])
    assert first["degraded"] is False
    second = fan.api.get("/api/v1/feed", {"limit": 2, "cursor": first["next_cursor"]}).json()
    third = fan.api.get("/api/v1/feed", {"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [int(p["id"]) for p in second["results"]] == posted[::-1][2:4]
    assert [int(p["id"]) for p in third["results"]] == posted[:1]
    assert third["next_cursor"] is None


@pytest.mark.parametrize("query", ["cursor=garbage", "limit=0", "limit=101", "limit=x", "cursor="])
def test_feed_bad_input(person, query):
    reader = person("reader")
    response = reader.api.get("/api/v1/feed?" + query)
    if query == "cursor=":
        assert response.status_code == 200  # an empty cursor is the first page
    else:
        assert_problem(response, 400, "validation-error")


def test_cold_timeline_is_rebuilt_from_postgres(person):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    posted = [post(author, f"p{i}") for i in range(3)]
    for post_id in posted:
        fan_out(post_id)  # fan has no Redis timeline yet: only Postgres is written
    assert not store.client().exists(store.key(fan.id))
    assert feed_ids(fan) == posted[::-1]
    assert store.client().zcard(store.key(fan.id)) == 4
    store.drop(user_id=fan.id)  # evicted
    assert feed_ids(fan) == posted[::-1]


@override_settings(TIMELINE_CAP=5)
def test_redis_keeps_the_newest_cap_entries_and_older_pages_come_from_postgres(person):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    feed_ids(fan)  # build the (empty) timeline, so fan-out writes into it
    posted = [post(author, f"p{i}") for i in range(8)]
    for post_id in posted:
        fan_out(post_id)
    members = store.client().zrange(store.key(fan.id), 0, -1)
    assert [int(m) for m in members] == [0, *posted[3:]]  # sentinel + newest 5
    first = fan.api.get("/api/v1/feed", {"limit": 4}).json()
    second = fan.api.get("/api/v1/feed", {"limit": 4, "cursor": first["next_cursor"]}).json()
    assert [int(p["id"]) for p in first["results"] + second["results"]] == posted[::-1]
    assert second["next_cursor"] is None


def test_deleted_post_leaves_every_timeline(person):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    feed_ids(fan)
    keep, gone = post(author, "keep"), post(author, "gone")
    fan_out(keep)
    fan_out(gone)
    assert author.api.delete(f"/api/v1/posts/{gone}").status_code == 204
    assert feed_ids(fan) == [keep]  # skipped at read even before cleanup runs
    services.post_remove(post_id=gone)
    assert not TimelineEntry.objects.filter(post_id=gone).exists()
    assert [int(m) for m in store.client().zrange(store.key(fan.id), 0, -1)] == [0, keep]


@override_settings(BACKFILL_POSTS=2)
def test_follow_backfills_recent_posts_and_unfollow_removes_them(person):
    author, other, fan = person("author"), person("other"), person("fan")
    posted = [post(author, f"p{i}") for i in range(3)]
    follow(fan, other)
    other_post = post(other, "other")
    fan_out(other_post)
    feed_ids(fan)
    follow(fan, author)
    assert feed_ids(fan) == [other_post, *posted[::-1][:2]]  # the newer post first, two backfilled
    assert AuthorStats.objects.get(author_id=author.id).followers_count == 1
    fan.unfollow(author)
    services.unfollow_apply(follower_id=fan.id, followee_id=author.id)
    assert feed_ids(fan) == [other_post]
    assert not TimelineEntry.objects.filter(user_id=fan.id, author_id=author.id).exists()
    assert AuthorStats.objects.get(author_id=author.id).followers_count == 0


@override_settings(FANOUT_MAX_FOLLOWERS=2)
def test_big_author_is_merged_at_read_not_fanned_out(person):
    star = person("star")
    fans = [person("fan") for _ in range(3)]
    small, late = person("small"), person("late")
    for fan in fans[:2]:
        follow(fan, star)
    assert AuthorStats.objects.get(author_id=star.id).is_big is False
    follow(fans[2], star)  # third follower: above the threshold → promoted
    assert AuthorStats.objects.get(author_id=star.id).is_big is True
    services.author_promote(author_id=star.id)  # the task queued after commit: edges walked from users
    assert sorted(BigAuthorFollow.objects.filter(author_id=star.id).values_list("user_id", flat=True)) == sorted(
        f.id for f in fans
    )
    follow(fans[0], small)
    small_post = post(small, "small")
    fan_out(small_post)
    star_post = post(star, "star")
    assert fan_out(star_post) == 0  # not fanned out to followers...
    assert list(TimelineEntry.objects.filter(post_id=star_post).values_list("user_id", flat=True)) == [star.id]
    assert feed_ids(fans[0]) == [star_post, small_post]  # ...but merged in at read
    assert feed_ids(fans[1]) == [star_post]
    assert feed_ids(star) == [star_post]
    follow(late, star)
    assert feed_ids(late) == [star_post]
    late.unfollow(star)
    services.unfollow_apply(follower_id=late.id, followee_id=star.id)
    assert feed_ids(late) == []


def test_user_deleted_removes_their_posts_likes_and_timeline(person):
    author, fan = person("author"), person("fan")
    follow(fan, author)
    fan_post = post(fan, "fan's")
    author_post = post(author, "author's")
    fan_out(author_post)
    fan_out(fan_post)
    feed_ids(fan)
    author.api.post(f"/api/v1/posts/{fan_post}/like")
    fan.api.post(f"/api/v1/posts/{author_post}/like")
    services.user_purge(user_id=author.id)
    assert not Post.objects.filter(author_id=author.id).exists()
    assert Post.objects.get(id=fan_post).like_count == 0
    assert feed_ids(fan) == [fan_post]
    assert not TimelineEntry.objects.filter(user_id=author.id).exists()
    assert not AuthorStats.objects.filter(author_id=author.id).exists()


@pytest.mark.parametrize("limit", [1, 100])
def test_feed_query_budget_does_not_grow_with_page_size(person, limit):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    rows = [  # liked by someone (like_count > 0): the read asks whether the reader is among them
        Post(
            id=ids.next_id(namespace="posts"), author_id=author.id, body=f"p{i}", like_count=1, created_at="2025-01-01T00:00:00Z"
        )
        for i in range(100)
    ]
    Post.objects.bulk_create(rows)
    services.entries_deliver(post_ids_by_author={author.id: [p.id for p in rows]}, user_ids=[fan.id])
    feed_ids(fan)  # warm: Redis timeline built (timelines.api), author profile cached
    feed_ids(fan)  # and the big followees (none) (timelines.home)
    post_cache.forget([p.id for p in rows])
    with QueryCounter() as cold:
        response = fan.api.get("/api/v1/feed", {"limit": limit})
    assert len(response.json()["results"]) == limit
    assert len(cold) == 2, [q["sql"] for q in cold]  # posts (cache misses), liked_by_me
    with QueryCounter() as warm:
        again = fan.api.get("/api/v1/feed", {"limit": limit})
    assert again.json() == response.json()
    assert len(warm) == 1, [q["sql"] for q in warm]  # liked_by_me: posts come from the Redis post cache
    Post.objects.filter(id__in=[p.id for p in rows]).update(like_count=0)
    post_cache.forget([p.id for p in rows])
    fan.api.get("/api/v1/feed", {"limit": limit})
    with QueryCounter() as unliked:
        assert fan.api.get("/api/v1/feed", {"limit": limit}).json()["results"][0]["liked_by_me"] is False
    assert len(unliked) == 0, [q["sql"] for q in unliked]  # nobody likes them: nothing to ask


@override_settings(FANOUT_MAX_FOLLOWERS=0)
def test_feed_query_budget_with_big_followees_is_one_more_query(person):
    stars, fan = [person("star") for _ in range(3)], person("fan")
    for star in stars:
        follow(fan, star)  # 1 > 0 follower: every star is big, merged at read
    posted = [post(star, f"p{i}") for i in range(4) for star in stars]
    assert BigAuthorFollow.objects.filter(user_id=fan.id).count() == 3
    assert feed_ids(fan, limit=5) == posted[::-1][:5]  # warm
    with QueryCounter() as warm:
        assert feed_ids(fan, limit=5) == posted[::-1][:5]
    assert len(warm) == 2, [q["sql"] for q in warm]  # big followees (just changed: not cached yet), their merged posts
    store.client().delete(store.big_key(fan.id))  # the change's mark expired: the next read caches them
    assert feed_ids(fan, limit=5) == posted[::-1][:5]
    with QueryCounter() as cached:
        assert feed_ids(fan, limit=5) == posted[::-1][:5]
    assert len(cached) == 1, [q["sql"] for q in cached]  # their merged posts (one query)
    seen, cursor = [], None
    while True:  # paging through the merge below each cursor: every post once, in order
        body = fan.api.get("/api/v1/feed", {"limit": 5, **({"cursor": cursor} if cursor else {})}).json()
        seen += [int(p["id"]) for p in body["results"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == posted[::-1]
    for star in stars[1:]:
        fan.unfollow(star)
        services.unfollow_apply(follower_id=fan.id, followee_id=star.id)
    assert feed_ids(fan, limit=3) == posted[9::-3][:3]  # stars[0] is left: the single-author query
    body = fan.api.get("/api/v1/feed", {"limit": 3}).json()
    assert [int(p["id"]) for p in fan.api.get("/api/v1/feed", {"limit": 3, "cursor": body["next_cursor"]}).json()["results"]] == [
        posted[0]
    ]


def test_cached_posts_keep_like_counts_and_liked_by_me_exact_and_deleted_posts_out(person, django_capture_on_commit_callbacks):
    author, fan, liker = person("author"), person("fan"), person("liker")
    fan.follow(author)
    keep, gone = post(author, "keep"), post(author, "gone")
    services.entries_deliver(post_ids_by_author={author.id: [keep, gone]}, user_ids=[fan.id, liker.id])

    def seen(reader) -> list[tuple[int, int, bool]]:
        return [(int(p["id"]), p["like_count"], p["liked_by_me"]) for p in reader.api.get("/api/v1/feed").json()["results"]]

    assert seen(fan) == [(gone, 0, False), (keep, 0, False)]  # both rows now in the post cache
    with django_capture_on_commit_callbacks(execute=True):
        assert liker.api.post(f"/api/v1/posts/{keep}/like").status_code == 201
    assert seen(fan) == [(gone, 0, False), (keep, 1, False)]
    assert seen(liker) == [(gone, 0, False), (keep, 1, True)]
    with django_capture_on_commit_callbacks(execute=True):
        assert liker.api.delete(f"/api/v1/posts/{keep}/like").status_code == 204
    assert seen(liker) == [(gone, 0, False), (keep, 0, False)]
    with django_capture_on_commit_callbacks(execute=True):
        assert author.api.delete(f"/api/v1/posts/{gone}").status_code == 204
    assert seen(fan) == [(keep, 0, False)]  # buried in the cache at commit, before any cleanup ran
    assert store.client().get(f"post:v1:{gone}") == post_cache.TOMBSTONE


@pytest.fixture
def planner_as_on_a_big_table():
    """On these small test tables, statistics from an autovacuum ANALYZE mid-run can make the planner
    prefer bitmap scans; on a big table the index scans below win. Disabled for the test's
    transaction only (shared.testing.explain already discourages sequential scans)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan = off")


@pytest.mark.usefixtures("planner_as_on_a_big_table")
def test_explain_durable_timeline_page_uses_the_primary_key(person):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")  # nor a sort of another index's rows (see above)
    plan = explain(
        TimelineEntry.objects.filter(user_id=1, post_id__lt=10**18).order_by("-post_id").values_list("post_id", flat=True)[:20]
    )
    assert "timelines_timelineentry_pkey" in plan, plan


@pytest.mark.usefixtures("planner_as_on_a_big_table")
def test_explain_removal_queries_use_their_indexes():
    assert "timeline_post_idx" in explain(TimelineEntry.objects.filter(post_id=5).values_list("user_id"))
    assert "timeline_user_author_idx" in explain(TimelineEntry.objects.filter(user_id=1, author_id=2).values_list("post_id"))
    assert "timelines_bigauthorfollow_pkey" in explain(BigAuthorFollow.objects.filter(user_id=1).values_list("author_id"))


@pytest.mark.usefixtures("planner_as_on_a_big_table")
def test_explain_posts_queries_use_their_indexes():
    from posts import selectors as post_selectors
    from posts.models import Like

    assert "post_author_id_idx" in explain(Post.objects.filter(author_id=1, id__lt=10**18).order_by("-id")[:21])
    assert "post_author_id_idx" in explain(Post.objects.filter(author_id__in=[1, 2]).order_by("-id")[:21])
    assert "posts_post_pkey" in explain(Post.objects.filter(id__in=[1, 2, 3]).values(*post_selectors.POST_FIELDS))
    assert "like_user_post_uniq" in explain(Like.objects.filter(user_id=1, post_id__in=[1, 2]).values("post_id"))
    from django.db import connection

    with connection.cursor() as cursor:  # the user timeline's one query: the index in order cut by LIMIT, liked on the unique
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + post_selectors._AUTHOR_PAGE_SQL, [7, 1, 10**18, 21])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using post_author_id_idx" in plan and "Sort" not in plan, plan
    assert "like_user_post_uniq" in plan, plan


@pytest.mark.usefixtures("planner_as_on_a_big_table")
def test_explain_big_author_merge_is_a_bounded_scan_per_big_author():
    """The read's big-author merge: per author a backward scan of post_author_id_idx cut by LIMIT
    (never all of an author's posts, then a sort)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + selectors._BIG_MERGE_SQL, [[1, 2], 10**18, 21, 21])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan Backward using post_author_id_idx" in plan or "Index Only Scan using post_author_id_idx" in plan, plan
    assert plan.count("Limit") == 2, plan  # the outer page and the per-author cut
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + selectors._ONE_BIG_SQL, [1, 10**18, 21])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan Backward using post_author_id_idx" in plan or "Index Only Scan using post_author_id_idx" in plan, plan
    assert "Sort" not in plan, plan


def test_home_timeline_ids_selector_merges_without_duplicates(person):
    author, fan = person("author"), person("fan")
    post_id = post(author)
    services.entries_deliver(post_ids_by_author={author.id: [post_id]}, user_ids=[fan.id])
    BigAuthorFollow.objects.create(user_id=fan.id, author_id=author.id)
    assert selectors.home_timeline_ids(user_id=fan.id, before_id=None, count=10) == [post_id]


@override_settings(FANOUT_MAX_FOLLOWERS=4, FANOUT_DEMOTE_FOLLOWERS=3, FANOUT_PAGE=1, DEMOTE_ROWS_PER_DELIVERY=2)
def test_big_author_demoted_below_the_lower_threshold_backfills_first_and_readers_never_miss_or_repeat(
    person, django_capture_on_commit_callbacks
):
    star, other = person("star"), person("other")
    fans = [person("fan") for _ in range(5)]
    early = post(star, "before the follows")
    for fan in fans[:4]:
        follow(fan, star)
    with django_capture_on_commit_callbacks() as queued:
        follow(fans[4], star)  # 5 > 4: promoted
    # the promotion walk (and the repeat after the commit of the Redis write every follow change makes)
    assert [c for c in queued if not c.__qualname__.startswith("_store_write_twice.")] == queued[:1]
    services.author_promote(author_id=star.id)
    assert BigAuthorFollow.objects.filter(author_id=star.id).count() == 5
    follow(fans[0], other)
    other_post = post(other, "other")
    fan_out(other_post)
    late = post(star, "while big")
    assert fan_out(late) == 0  # merged at read, not fanned out
    stayers = fans[:2]
    store.drop(user_id=stayers[1].id)  # one reader's Redis timeline is cold: rebuilt from Postgres during demotion
    expected = {stayers[0].id: [late, other_post, early], stayers[1].id: [late, early]}

    def reads_are_whole():
        for fan in stayers:
            assert feed_ids(fan) == expected[fan.id]  # every post of the star, each once, newest first

    reads_are_whole()

    def unfollow(fan):
        fan.unfollow(star)
        with django_capture_on_commit_callbacks() as queued:
            services.unfollow_apply(follower_id=fan.id, followee_id=star.id)
        # every unfollow repeats its Redis removal after the commit (timelines.store's build
        # protocol); what matters here is what else it queues
        return [c for c in queued if not c.__qualname__.startswith("_store_write_twice.")]

    # oscillating between the two thresholds (3 <= count <= 4): neither demoted nor promoted again
    assert unfollow(fans[4]) == []  # 4
    assert unfollow(fans[3]) == []  # 3: not below the demotion threshold
    with django_capture_on_commit_callbacks() as queued:
        follow(fans[3], star)  # 4 again: not above the promotion threshold
    assert [c for c in queued if not c.__qualname__.startswith("_store_write_twice.")] == []
    assert unfollow(fans[3]) == []  # 3
    stats = AuthorStats.objects.get(author_id=star.id)
    assert (stats.followers_count, stats.is_big) == (3, True)
    assert BigAuthorFollow.objects.filter(author_id=star.id).count() == 3
    reads_are_whole()

    assert len(unfollow(fans[2])) == 1  # 2 < 3: below the lower threshold, the demotion is requested
    steps = []

    def deliver_checking_reads(*, author_id, post_ids, user_ids):
        assert AuthorStats.objects.get(author_id=star.id).is_big is False  # flipped first
        reads_are_whole()
        assert services.demotion_backfill(author_id=author_id, post_ids=post_ids, user_ids=user_ids) == [late, early]
        reads_are_whole()  # posts in the timeline *and* merged: still once each
        assert services.demotion_release(author_id=author_id, user_ids=user_ids) == len(user_ids)
        reads_are_whole()
        steps.append(user_ids)

    assert services.author_demote(author_id=star.id, deliver=deliver_checking_reads) == 2
    assert sorted(u for page in steps for u in page) == sorted(f.id for f in stayers)  # one follower per chunk
    assert not BigAuthorFollow.objects.filter(author_id=star.id).exists()
    for fan in stayers:
        assert set(TimelineEntry.objects.filter(user_id=fan.id, author_id=star.id).values_list("post_id", flat=True)) == {
            late,
            early,
        }
        assert {late, early} <= {int(m) for m in store.client().zrange(store.key(fan.id), 1, -1)}
    assert services.author_demote(author_id=star.id) == 0  # done: a second run is a no-op
    after = post(star, "fanned out again")
    assert fan_out(after) == 2
    expected = {stayers[0].id: [after, late, other_post, early], stayers[1].id: [after, late, early]}
    reads_are_whole()


@override_settings(FANOUT_MAX_FOLLOWERS=3, FANOUT_DEMOTE_FOLLOWERS=2)
def test_demotion_overtaken_by_a_new_promotion_keeps_the_merge(person):
    star = person("star")
    fans = [person("fan") for _ in range(4)]
    for fan in fans:
        follow(fan, star)  # 4 > 3: big
    services.author_promote(author_id=star.id)
    star_post = post(star)
    assert fan_out(star_post) == 0
    for fan in fans[:0:-1]:
        fan.unfollow(star)
        services.unfollow_apply(follower_id=fan.id, followee_id=star.id)  # 3, 2, then 1 < 2
    chunks = []
    assert services.author_demote(author_id=star.id, deliver=lambda **chunk: chunks.append(chunk)) == 1
    assert AuthorStats.objects.get(author_id=star.id).is_big is False
    for fan in fans[1:]:
        follow(fan, star)  # back to 4 before the chunks ran: promoted again
    services.author_promote(author_id=star.id)
    assert AuthorStats.objects.get(author_id=star.id).is_big is True
    for chunk in chunks:  # the demotion's queued deliveries run late
        services.demotion_deliver(**chunk)
    assert BigAuthorFollow.objects.filter(author_id=star.id).count() == 4  # the merge is kept for everyone
    assert not TimelineEntry.objects.filter(user_id=fans[0].id, post_id=star_post).exists()  # nothing backfilled
    for fan in fans:
        assert feed_ids(fan) == [star_post]


def test_demotion_threshold_defaults_to_80_percent_and_must_sit_below_the_promotion_one(settings):
    settings.FANOUT_MAX_FOLLOWERS, settings.FANOUT_DEMOTE_FOLLOWERS = 100_000, None
    assert services.demote_below() == 80_000
    settings.FANOUT_DEMOTE_FOLLOWERS = 50_000
    assert services.demote_below() == 50_000
    import os
    import subprocess
    import sys
    from pathlib import Path

    feed_dir = Path(services.__file__).resolve().parents[1]
    for value in ("100000", "150000", "-1"):  # no gap (or an inverted one): refused at start-up
        result = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=feed_dir,
            capture_output=True,
            text=True,
            env={**os.environ, "FANOUT_MAX_FOLLOWERS": "100000", "FANOUT_DEMOTE_FOLLOWERS": value},
        )
        assert result.returncode != 0 and "FANOUT_DEMOTE_FOLLOWERS must be" in result.stderr, result.stderr[-500:]


@override_settings(FANOUT_MAX_FOLLOWERS=2, FANOUT_DEMOTE_FOLLOWERS=2)
def test_unfollows_below_the_demotion_threshold_request_one_demotion(person, django_capture_on_commit_callbacks):
    from celery import current_app

    star = person("star")
    fans = [person("fan") for _ in range(3)]
    for fan in fans:
        follow(fan, star)  # 3 > 2: big
    broker = current_app.connection_for_write().default_channel.client  # the broker's Redis (the `feed` list)
    queued_before = broker.llen("feed")
    for fan in fans[1:]:
        fan.unfollow(star)
        with django_capture_on_commit_callbacks(execute=True):
            services.unfollow_apply(follower_id=fan.id, followee_id=star.id)  # 1, then 0: both below 2
    assert broker.llen("feed") == queued_before + 1  # one feed.author_demote, not one per unfollow
    assert store.client().ttl(f"demote:{star.id}") > 0


def test_page_with_rows_reads_the_page_and_its_cached_rows_in_one_call():
    """The home read's one Redis round trip: the same ids as store.page, with each id's post cache
    value as read (a row, a tombstone, or None for a miss)."""
    user_id = 9_000_001
    store.drop(user_id=user_id)
    assert store.page_with_rows(user_id=user_id, before_id=None, count=3, row_prefix=post_cache.KEY_PREFIX) == (
        False,
        [],
        False,
        {},
    )
    store.build_begin(user_id=user_id)  # a build under way is not a page to serve either
    assert store.page_with_rows(user_id=user_id, before_id=None, count=3, row_prefix=post_cache.KEY_PREFIX)[0] is False
    post_ids = [ids.next_id(namespace="posts") for _ in range(5)]
    store.build(user_id=user_id, post_ids=post_ids)
    conn = store.client()
    conn.set(post_cache.KEY_PREFIX + str(post_ids[-1]), b'{"id": 1}')
    conn.set(post_cache.KEY_PREFIX + str(post_ids[-2]), post_cache.TOMBSTONE)
    for before in (None, post_ids[-2], post_ids[1]):
        built, page, full, rows = store.page_with_rows(
            user_id=user_id, before_id=before, count=3, row_prefix=post_cache.KEY_PREFIX
        )
        assert (built, page, full) == store.page(user_id=user_id, before_id=before, count=3)
        assert {i: rows[i] for i in page} == {
            i: b'{"id": 1}' if i == post_ids[-1] else post_cache.TOMBSTONE if i == post_ids[-2] else None for i in page
        }
    # more members share the cursor's score than the read's slack: None, and the read widens with page()
    tied = [(post_ids[-1] >> 12 << 12) + 4096 * 1000 + k for k in range(20)]
    store.build(user_id=user_id, post_ids=tied)
    assert store.page_with_rows(user_id=user_id, before_id=tied[5], count=3, row_prefix=post_cache.KEY_PREFIX) is None
    assert selectors.home_timeline_ids(user_id=user_id, before_id=tied[5], count=3) == tied[4:1:-1]
    store.drop(user_id=user_id)
