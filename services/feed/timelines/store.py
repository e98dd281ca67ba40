"""Home timelines in Redis: one sorted set per reader, `tl:{user_id}`, capped at TIMELINE_CAP.

Members are post ids (decimal), scores `post_id >> 12` (the snowflake's milliseconds and worker:
51 bits, exact in a double); posts sharing a score are ordered by member, which for ids of the
same magnitude is id order. Every set holds a sentinel member "0": at score -1 while a reader
builds it from Postgres, at score 0 once built. Fan-out writes only into sets that exist (a Lua
script checks), and always after its rows are committed; a build first creates the set (sentinel
at -1), then reads the timelines table, then merges what it read and marks the set built. So an
entry committed before the build's read is in what it read, and one committed after is added to
the set by its writer: a set is either complete (built, then kept up to date) or not yet built
(cold, evicted or being built: read from the timelines table and built again). Reads ask for scores
above 0, so the sentinel is never returned.

Clients come from shared.redis_clients (bounded timeouts, fork-safe); every function raises
`redis.ConnectionError`/`TimeoutError` when Redis is away and the callers decide: the read falls
back to the timelines table (timelines.selectors), a handler's transaction rolls back and the
event is retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis
from django.conf import settings
from redis.commands.core import Script

from shared import redis_clients

SENTINEL = "0"
BUILDING, BUILT = -1, 0  # the sentinel's score
KEYS_PER_CALL = 1000

# KEYS: timelines; ARGV: cap, then score/member pairs. Adds to the sets that exist (built or being
# built), trims to cap
# (ZCARD first: a set under the cap needs no trim; ~12% less server time per key, measured).
_ADD_IF_BUILT = """
local cap = tonumber(ARGV[1])
local written = 0
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for j = 2, #ARGV, 2 do redis.call('ZADD', key, ARGV[j], ARGV[j + 1]) end
    if redis.call('ZCARD', key) > cap + 1 then redis.call('ZREMRANGEBYRANK', key, 1, -(cap + 1)) end
    written = written + 1
  end
end
return written
"""


_scripts: dict[tuple[int, str], Script] = {}  # (id of the Redis client, Lua source) -> registered script


def client(*, bulk: bool = False) -> redis.Redis:
    """The request-path client (short reply timeout); `bulk` for the fan-out's pipelines (workers)."""
    return redis_clients.client(bulk=bulk)


def _registered(conn: redis.Redis, source: str) -> Script:
    """The Lua script `source` registered once per Redis client (its SHA, EVALSHA then EVAL)."""
    script = _scripts.get((id(conn), source))
    if script is None:
        script = _scripts[(id(conn), source)] = conn.register_script(source)
    return script


def _add_script(conn: redis.Redis) -> Script:
    return _registered(conn, _ADD_IF_BUILT)


def key(user_id: int) -> str:
    return f"tl:{user_id}"


def score(post_id: int) -> int:
    return post_id >> 12


def add(*, user_ids: Sequence[int], post_ids: Sequence[int]) -> int:
    """Put posts into the built timelines of these users; returns how many timelines were written."""
    conn = client(bulk=True)
    args: list = [settings.TIMELINE_CAP]
    for post_id in post_ids:
        args += [score(post_id), str(post_id)]
    pipe = conn.pipeline(transaction=False)  # every chunk's script call in one round trip
    add_script = _add_script(conn)
    for start in range(0, len(user_ids), KEYS_PER_CALL):
        keys = [key(u) for u in user_ids[start : start + KEYS_PER_CALL]]
        add_script(keys=keys, args=args, client=pipe)
    return sum(pipe.execute())


def remove(*, user_ids: Iterable[int], post_ids: Sequence[int]) -> None:
    members = [str(p) for p in post_ids]
    if not members:
        return
    pipe = client(bulk=True).pipeline(transaction=False)
    for count, user_id in enumerate(user_ids, 1):
        pipe.zrem(key(user_id), *members)
        if count % KEYS_PER_CALL == 0:
            pipe.execute()
    pipe.execute()


def drop(*, user_id: int) -> None:
    client().delete(key(user_id))


def build_begin(*, user_id: int) -> None:
    """Step one of a build, before reading the timelines table: the set exists from now on (sentinel
    at BUILDING unless already built), so fan-out committed after the read adds to it."""
    pipe = client().pipeline(transaction=True)
    pipe.zadd(key(user_id), {SENTINEL: BUILDING}, nx=True)
    pipe.expire(key(user_id), settings.TIMELINE_TTL)
    pipe.execute()


def build(*, user_id: int, post_ids: Sequence[int]) -> None:
    """Step two: merge the durable table's newest entries (read after build_begin) with what fan-out
    wrote meanwhile, and mark the set built."""
    pipe = client().pipeline(transaction=True)
    pipe.zadd(key(user_id), {SENTINEL: BUILT, **{str(p): score(p) for p in post_ids}})
    pipe.zremrangebyrank(key(user_id), 1, -(settings.TIMELINE_CAP + 1))
    pipe.expire(key(user_id), settings.TIMELINE_TTL)
    pipe.execute()


def page(*, user_id: int, before_id: int | None, count: int) -> tuple[bool, list[int], bool]:
    """(built, newest post ids below before_id — up to count, whether the set is full at cap).

    A full set may have dropped older entries: a reader paging past its end continues in Postgres."""
    high = score(before_id) if before_id is not None else "+inf"
    slack = 8  # members sharing the cursor's score that are not below it
    while True:
        pipe = client().pipeline(transaction=False)
        pipe.zscore(key(user_id), SENTINEL)
        pipe.zrange(key(user_id), high, "(0", desc=True, byscore=True, offset=0, num=count + slack)
        pipe.zcard(key(user_id))
        pipe.expire(key(user_id), settings.TIMELINE_TTL)
        sentinel, raw, size, _ = pipe.execute()
        if sentinel != BUILT:  # absent, or a build has not finished: it may lack older entries
            return False, [], False
        ids = [int(m) for m in raw]
        below = [i for i in ids if before_id is None or i < before_id]
        if len(below) >= count or len(ids) < count + slack:
            return True, below[:count], size > settings.TIMELINE_CAP
        slack *= 8


# KEYS: the timeline; ARGV: the highest score, how many members, the TTL, the post cache's key
# prefix. The read path's one round trip: the page of ids as page() reads it (built: the sentinel
# at BUILT) and, in the same call, those posts' cached rows (posts.cache keys, read as the MGET
# there would). Returns false when the set is not built, else {size, ids, rows}.
_PAGE_WITH_ROWS = """
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('ZSCORE', KEYS[1], '0') ~= '0' then return false end
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], '(0', 'BYSCORE', 'REV', 'LIMIT', 0, tonumber(ARGV[2]))
local rows = {}
if #ids > 0 then
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = ARGV[4] .. id end
  rows = redis.call('MGET', unpack(keys))
end
return {redis.call('ZCARD', KEYS[1]), ids, rows}
"""


def page_with_rows(
    *, user_id: int, before_id: int | None, count: int, row_prefix: str
) -> tuple[bool, list[int], bool, dict[int, bytes | None]] | None:
    """page()'s answer plus the raw cached rows (`row_prefix` + id → value or None) of the ids it
    read, in one round trip. None when the ids below the cursor fill less than the page although
    the set has more (members sharing the cursor's score): the caller uses page() then."""
    conn = client()
    script = _registered(conn, _PAGE_WITH_ROWS)
    high = score(before_id) if before_id is not None else "+inf"
    slack = 8  # as page(): members sharing the cursor's score that are not below it
    found = script(keys=[key(user_id)], args=[high, count + slack, settings.TIMELINE_TTL, row_prefix])
    if not found:
        return False, [], False, {}
    size, raw, rows = found
    ids = [int(m) for m in raw]
    below = [i for i in ids if before_id is None or i < before_id]
    if len(below) < count and len(ids) >= count + slack:
        return None
    return True, below[:count], size > settings.TIMELINE_CAP, dict(zip(ids, rows, strict=True))


# The big authors a reader follows (timelines.models.BigAuthorFollow), cached for the home read:
# `tlbig:{user_id}` → their ids, comma-separated ("" for none, most readers), filled by a read that
# missed (SET NX, BIG_FOLLOWEES_CACHE_SECONDS). A change of the reader's rows (follow or unfollow of
# a big author, promotion, demotion, deletion) overwrites the key with DIRTY for DIRTY_SECONDS, in
# its transaction and again after the commit (timelines.services._big_followees_changed): while it
# is there, reads ask Postgres and fill nothing (SET NX cannot replace it), so a fill that read the
# rows before the change cannot land after it; once it expires the next read fills from the
# committed rows.
DIRTY = b"?"
DIRTY_SECONDS = 60


def big_key(user_id: int) -> str:
    return f"tlbig:{user_id}"


def big_followees_decode(raw: bytes | None) -> list[int] | None:
    """The cached big followees, or None when there is nothing to use (a miss, or DIRTY)."""
    if raw is None or raw == DIRTY:
        return None
    return [int(i) for i in raw.split(b",")] if raw else []


def big_followees_fill(*, user_id: int, author_ids: Sequence[int]) -> None:
    client().set(big_key(user_id), ",".join(str(a) for a in author_ids), nx=True, ex=settings.BIG_FOLLOWEES_CACHE_SECONDS)


def big_followees_dirty(*, user_ids: Iterable[int]) -> None:
    pipe = client(bulk=True).pipeline(transaction=False)
    for count, user_id in enumerate(user_ids, 1):
        pipe.set(big_key(user_id), DIRTY, ex=DIRTY_SECONDS)
        if count % KEYS_PER_CALL == 0:
            pipe.execute()
    pipe.execute()


# The plain home view's one round trip (timelines.home). KEYS: the timeline, its big-followee key,
# then the token's revocation keys (shared.revocation) when they live in this Redis (none
# otherwise). ARGV: the highest score, how many members, the TTL, the post cache's key prefix, the
# profile cache's key prefix. Returns {1} when a revocation key exists (nothing else is read);
# {0, big} when the set is not built; else {0, big, size, ids, rows, author ids, profiles}: the
# page as page() reads it, the posts' cached rows (posts.cache) and the cached profiles
# (authors.selectors) of the authors of the rows found, taken from each row's "author_id".
_HOME_READ = """
if #KEYS > 2 and redis.call('EXISTS', unpack(KEYS, 3)) > 0 then return {1} end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local big = redis.call('GET', KEYS[2])
if redis.call('ZSCORE', KEYS[1], '0') ~= '0' then return {0, big} end
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], '(0', 'BYSCORE', 'REV', 'LIMIT', 0, tonumber(ARGV[2]))
local rows, authors, profiles = {}, {}, {}
if #ids > 0 then
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = ARGV[4] .. id end
  rows = redis.call('MGET', unpack(keys))
  local seen, pkeys = {}, {}
  for _, row in ipairs(rows) do
    if row then
      local author = string.match(row, '"author_id":%s*(%d+)')
      if author and not seen[author] then
        seen[author] = true
        authors[#authors + 1] = author
        pkeys[#pkeys + 1] = ARGV[5] .. author
      end
    end
  end
  if #pkeys > 0 then profiles = redis.call('MGET', unpack(pkeys)) end
end
return {0, big, redis.call('ZCARD', KEYS[1]), ids, rows, authors, profiles}
"""


@dataclass(slots=True)
class HomeRead:
    """What home_read found. `revoked`: a revocation key exists (nothing else was read). `built`:
    the timeline is built; when it is not, or when `ids` is None (the cursor's score is shared by
    more members than the slack), the caller reads the slow way (timelines.selectors). `big`: the
    cached big followees as stored (big_followees_decode)."""

    revoked: bool = False
    built: bool = False
    big: bytes | None = None
    ids: list[int] | None = None
    full: bool = False
    rows: dict[int, bytes | None] = field(default_factory=dict)
    profiles: dict[int, bytes | None] = field(default_factory=dict)


def home_read(
    *, user_id: int, before_id: int | None, count: int, row_prefix: str, profile_prefix: str, revocation_keys: Sequence[str] = ()
) -> HomeRead:
    conn = client()
    script = _registered(conn, _HOME_READ)
    high = score(before_id) if before_id is not None else "+inf"
    slack = 8  # as page(): members sharing the cursor's score that are not below it
    found = script(
        keys=[key(user_id), big_key(user_id), *revocation_keys],
        args=[high, count + slack, settings.TIMELINE_TTL, row_prefix, profile_prefix],
    )
    if found[0]:
        return HomeRead(revoked=True)
    if len(found) == 2:
        return HomeRead(big=found[1])
    _, big, size, raw, rows, authors, profiles = found
    ids = [int(m) for m in raw]
    below = [i for i in ids if before_id is None or i < before_id]
    if len(below) < count and len(ids) >= count + slack:
        return HomeRead(built=True, big=big)
    return HomeRead(
        built=True,
        big=big,
        ids=below[:count],
        full=size > settings.TIMELINE_CAP,
        rows=dict(zip(ids, rows, strict=True)),
        profiles=dict(zip((int(a) for a in authors), profiles, strict=True)),
    )
