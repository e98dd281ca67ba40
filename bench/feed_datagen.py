"""Realistic feed data, fast: users with a power-law follower distribution, posts, timelines.

    python bench/feed_datagen.py --users 100000 --posts 1000000 \
        --users-db $USERS_DATABASE_URL --feed-db $FEED_DATABASE_URL --redis $FEED_REDIS_URL

Writes each service's own tables as that service's role (users: accounts_user, follows_follow;
feed: posts_post, timelines_*), with COPY in large batches, never a row at a time. Assumes
empty, migrated schemas.

Shape: user 1 is a celebrity followed by `--celebrity-followers` users (the fan-out benchmark's
author); every user follows a log-normal number of others (median ~12, mean ~20) chosen with a
power law (low ids are popular); post authors are power-law too (low ids post more). Post ids are
snowflakes made from their creation times, spread over the last 30 days. Home timelines get the
newest entries first until `--timeline-rows` (default 40 per user) rows: what a fanned-out
system holds once older entries aged out. Authors above --big-threshold followers are not
fanned out (hybrid): their follower edges go to timelines_bigauthorfollow instead. Redis
timelines are pre-built for every user that has entries (warm cache), unless --cold.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "shared" / "src"))
from shared.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS  # noqa: E402

COPY_ROWS = 200_000
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "coffee",
    "brews",
    "and",
    "the",
    "build",
    "goes",
    "green",
    "again",
    "today",
    "tomorrow",
    "weekend",
    "launch",
    "deploy",
    "ship",
    "review",
    "merge",
    "bug",
    "fix",
    "lunch",
    "music",
    "travel",
    "photo",
]


def _copy(conn, table: str, columns: tuple[str, ...], rows) -> int:
    """COPY rows (tuples) into table in batches; returns the count. Indexes and key constraints
    are dropped first and rebuilt after the load (one sort each, instead of a B-tree insert per
    row): the same definitions, read back from the catalogue, so the schema is the migrated one."""
    cursor = conn.cursor()
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype = 'f', contype",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute("SELECT 1 FROM pg_constraint WHERE confrelid = %s::regclass", [table])
    if cursor.fetchone():  # another table's foreign key needs this one's primary key: keep it
        constraints = [(n, d) for n, d in constraints if not d.startswith("PRIMARY KEY")]
    cursor.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s "
        "AND i.schemaname = current_schema() AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
        "WHERE c.conname = i.indexname AND c.conrelid = %s::regclass)",
        [table, table],
    )
    indexes = cursor.fetchall()
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    for name, _ in reversed(constraints):
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    conn.commit()
    total = _copy_rows(conn, table, columns, rows)
    cursor = conn.cursor()
    cursor.execute("SET maintenance_work_mem = '512MB'")
    for name, definition in constraints:
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        cursor.execute(definition)
    conn.commit()
    return total


def _copy_rows(conn, table: str, columns: tuple[str, ...], rows) -> int:
    total = 0
    buf = io.StringIO()
    cursor = conn.cursor()

    def flush():
        buf.seek(0)
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)
        buf.seek(0)
        buf.truncate()

    pending = 0
    for row in rows:
        buf.write("\t".join(r"\N" if v is None else str(v) for v in row))
        buf.write("\n")
        pending += 1
        if pending == COPY_ROWS:
            flush()
            total += pending
            pending = 0
    if pending:
        flush()
        total += pending
    conn.commit()
    return total


def _vacuum(conn, tables: tuple[str, ...]) -> None:
    """VACUUM (ANALYZE) the loaded tables now: statistics for the planner, and the visibility map
    set, so autovacuum does not start on millions of fresh rows while a benchmark measures."""
    conn.autocommit = True
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"VACUUM (ANALYZE) {table}")
    conn.autocommit = False


def follow_graph(rng: random.Random, users: int, celebrity_followers: int) -> list[list[int]]:
    """following[u] for u in 1..users (index 0 unused)."""
    following: list[list[int]] = [[] for _ in range(users + 1)]
    for u in range(1, users + 1):
        k = min(users - 1, max(1, int(rng.lognormvariate(2.5, 1.0))))
        chosen: set[int] = set()
        while len(chosen) < k:
            v = int(users * rng.random() ** 2.5) + 1
            if v != u:
                chosen.add(v)
        following[u] = list(chosen)
    fans = rng.sample(range(2, users + 1), min(celebrity_followers, users - 1))
    for u in fans:
        if 1 not in following[u]:
            following[u].append(1)
    return following


def snowflake_at(ms: int, seq: int) -> int:
    return ((ms - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (1023 << SEQUENCE_BITS) | (seq & 0xFFF)


def generate(
    *,
    users: int,
    posts: int,
    users_db: str,
    feed_db: str,
    redis_url: str | None,
    celebrity_followers: int,
    timeline_rows: int | None,
    big_threshold: int,
    seed: int = 7,
    log=print,
) -> dict:
    rng = random.Random(seed)
    started = time.monotonic()
    following = follow_graph(rng, users, celebrity_followers)
    followers_count = [0] * (users + 1)
    for u in range(1, users + 1):
        for v in following[u]:
            followers_count[v] += 1
    log(f"  graph: {sum(map(len, following)):,} follows in {time.monotonic() - started:.1f}s")

    now = datetime.now(UTC).replace(microsecond=0)
    created = now.isoformat()
    uconn = psycopg2.connect(users_db)
    n = _copy(
        uconn,
        "accounts_user",
        (
            "id",
            "username",
            "email",
            "password",
            "display_name",
            "bio",
            "avatar_url",
            "followers_count",
            "following_count",
            "created_at",
            "updated_at",
        ),
        (
            (
                u,
                f"user{u}",
                f"user{u}@bench.example",
                "!",
                f"User {u}",
                "",
                f"https://img.example/{u}.png",
                followers_count[u],
                len(following[u]),
                created,
                created,
            )
            for u in range(1, users + 1)
        ),
    )
    _copy(
        uconn,
        "follows_follow",
        ("follower_id", "followee_id", "created_at"),
        ((u, v, created) for u in range(1, users + 1) for v in following[u]),
    )
    with uconn.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('accounts_user', 'id'), %s)", [users])
    uconn.commit()
    _vacuum(uconn, ("accounts_user", "follows_follow"))
    uconn.close()
    log(f"  users: {n:,} users + follows copied at {time.monotonic() - started:.1f}s")

    # posts: power-law authors (the celebrity posts rarely), times spread over 30 days, ascending
    start_ms = int((now - timedelta(days=30)).timestamp() * 1000)
    span = 30 * 24 * 3600 * 1000
    times = sorted(start_ms + int(rng.random() * span) for _ in range(posts))
    authors = [int((users - 1) * rng.random() ** 1.5) + 2 for _ in range(posts)]
    for i in range(0, posts, max(1, posts // 20)):
        authors[i] = 1  # the celebrity has a few posts too
    post_ids = []
    last_ms, seq = -1, 0
    for ms in times:
        seq = seq + 1 if ms == last_ms else 0
        last_ms = ms
        post_ids.append(snowflake_at(ms, seq))
    fconn = psycopg2.connect(feed_db)
    _copy(
        fconn,
        "posts_post",
        ("id", "author_id", "body", "mentions", "mentioned_user_ids", "like_count", "created_at"),
        (
            (
                post_ids[i],
                authors[i],
                " ".join(rng.choices(WORDS, k=rng.randint(3, 25))),
                "{}",
                "{}",
                0,
                datetime.fromtimestamp(times[i] / 1000, UTC).isoformat(),
            )
            for i in range(posts)
        ),
    )
    log(f"  posts: {posts:,} copied at {time.monotonic() - started:.1f}s")

    followers: list[list[int]] = [[] for _ in range(users + 1)]
    for u in range(1, users + 1):
        for v in following[u]:
            followers[v].append(u)
    big = {a for a in range(1, users + 1) if followers_count[a] > big_threshold}
    _copy(
        fconn,
        "timelines_authorstats",
        ("author_id", "followers_count", "is_big"),
        ((a, followers_count[a], "t" if a in big else "f") for a in range(1, users + 1)),
    )
    _copy(fconn, "timelines_bigauthorfollow", ("user_id", "author_id"), ((u, a) for a in big for u in followers[a]))

    budget = timeline_rows if timeline_rows is not None else 40 * users
    per_user: dict[int, list[int]] = {}
    rows = 0
    for i in range(posts - 1, -1, -1):  # newest first until the budget is spent
        author = authors[i]
        readers = [author] if author in big else [author, *followers[author]]
        for r in readers:
            per_user.setdefault(r, []).append(i)
        rows += len(readers)
        if rows >= budget:
            break
    _copy(
        fconn,
        "timelines_timelineentry",
        ("user_id", "post_id", "author_id"),
        ((u, post_ids[i], authors[i]) for u, items in per_user.items() for i in items),
    )
    fconn.commit()
    _vacuum(fconn, ("posts_post", "timelines_timelineentry", "timelines_bigauthorfollow", "timelines_authorstats"))
    fconn.close()
    log(f"  timelines: {rows:,} entries for {len(per_user):,} readers at {time.monotonic() - started:.1f}s")

    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        pipe = client.pipeline(transaction=False)
        for count, (u, items) in enumerate(per_user.items(), 1):
            newest = items[:800]
            pipe.zadd(f"tl:{u}", {"0": 0, **{str(post_ids[i]): post_ids[i] >> 12 for i in newest}})
            pipe.expire(f"tl:{u}", 7 * 24 * 3600)
            if count % 2000 == 0:
                pipe.execute()
        pipe.execute()
        log(f"  redis: {len(per_user):,} timelines built at {time.monotonic() - started:.1f}s")
    return {"following": following, "followers_count": followers_count, "big": big, "seconds": time.monotonic() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--users-db", required=True)
    parser.add_argument("--feed-db", required=True)
    parser.add_argument("--redis", help="feed's REDIS_URL: pre-build timelines (omit for a cold cache)")
    parser.add_argument("--celebrity-followers", type=int, default=100_000)
    parser.add_argument("--timeline-rows", type=int)
    parser.add_argument("--big-threshold", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = generate(
        users=args.users,
        posts=args.posts,
        users_db=args.users_db,
        feed_db=args.feed_db,
        redis_url=args.redis,
        celebrity_followers=args.celebrity_followers,
        timeline_rows=args.timeline_rows,
        big_threshold=args.big_threshold,
        seed=args.seed,
    )
    print(f"done in {result['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
