"""A small author's follower ids for fan-out, cached in Redis so that a post does not call users.

The fan-out of a post by an author with one page of at most FANOUT_INLINE followers (nearly every
author) needs those ids; asking users' internal API for them was an HTTP call per post, a
large share of the feed worker's CPU for a 10-follower post and of users' for every post. The ids
are kept here instead, for FANOUT_FOLLOWERS_CACHE_SECONDS, and are never served once they may be
out of date:

* one hash per author, `followers:<author>`: `ids`, the generation `gen` and the `epoch` they
  were read under, and the author's current generation `now`; the ids are served only while `now`
  and the global `followers-epoch` still equal what they were read under (one pipelined round trip
  for the two keys);
* feed's handlers of user.followed / user.unfollowed give the followee a new random generation,
  and user.deleted the epoch a new random value (a deleted account's follows go without an event
  per edge), inside their inbox transaction like their other Redis writes (if Redis fails, the
  event is retried);
* users publishes those events after its commit, so a new generation always comes after the change
  is visible to users' API. A fill reads the generation *before* asking users: a change that
  commits during the call replaces it after that read, and the ids written are stale on arrival.

Between a follow's commit in users and feed handling its event, a post's fan-out may still use the
ids without the new follower: the event's handler then backfills the author's recent posts, this
one included, as it does for a post fanned out before the follow reached feed. An unfollow in that
window is the same as before too: unfollow_apply removes the author's posts from the timeline.

Only single-page authors are cached (a longer walk pages through users as before). Redis being away
makes a read a miss and a fill a no-op: the fan-out then asks users, as without the cache.
Generations and epochs are random, never counters, and an author's generation lives in the same
key as its ids: a key that expired or was evicted cannot make old ids match again. A missing epoch
is created (SET NX) rather than read as a value, for the same reason.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings

from shared import redis_clients
from timelines import store

log = logging.getLogger("feed.timelines")

EPOCH_KEY = "followers-epoch"


def _key(author_id: int) -> str:
    return f"followers:{author_id}"


def _fresh() -> bytes:
    return uuid.uuid4().hex.encode()


Token = tuple[bytes, bytes]  # (epoch, generation) ids were read under


def lookup(author_id: int) -> tuple[list[int] | None, Token | None]:
    """The cached follower ids of a single-page author (None: not cached, or stale), and the token a
    fill must write with (None: no cache: Redis away, or the cache off)."""
    if settings.FANOUT_FOLLOWERS_CACHE_SECONDS <= 0:
        return None, None
    try:
        client = store.client()
        pipe = client.pipeline(transaction=False)
        pipe.get(EPOCH_KEY)
        pipe.hmget(_key(author_id), "now", "epoch", "gen", "ids")
        epoch, (now, ids_epoch, ids_gen, ids) = pipe.execute()
        if epoch is None:
            client.set(EPOCH_KEY, _fresh(), nx=True)
            created = client.get(EPOCH_KEY) or b""
            return None, (created if isinstance(created, bytes) else created.encode(), now or b"")
    except redis_clients.UNAVAILABLE as exc:
        log.warning("follower cache unavailable; asking users: %s", exc)
        return None, None
    token = (epoch, now or b"")
    if ids is not None and (ids_epoch, ids_gen or b"") == token:
        return [int(i) for i in ids.split(b",")] if ids else [], token
    return None, token


def fill(author_id: int, token: Token, ids: list[int]) -> None:
    """Keep the ids users answered with, under the token read before asking (see the module doc)."""
    epoch, generation = token
    try:
        pipe = store.client().pipeline(transaction=False)
        pipe.hset(_key(author_id), mapping={"epoch": epoch, "gen": generation, "ids": ",".join(map(str, ids))})
        pipe.expire(_key(author_id), settings.FANOUT_FOLLOWERS_CACHE_SECONDS)
        pipe.execute()
    except redis_clients.UNAVAILABLE as exc:
        log.warning("follower cache not written: %s", exc)


def followers_changed(author_id: int) -> None:
    """A follow edge to `author_id` was added or removed: its cached ids are stale from now on.
    Raises when Redis is away (called in an event handler: the event is retried)."""
    pipe = store.client().pipeline(transaction=False)
    pipe.hset(_key(author_id), "now", _fresh())
    pipe.expire(_key(author_id), max(1, settings.FANOUT_FOLLOWERS_CACHE_SECONDS))
    pipe.execute()


def everyone_changed() -> None:
    """Follow edges went without an event per edge (a deleted account's): every cached value is stale."""
    store.client().set(EPOCH_KEY, _fresh())
