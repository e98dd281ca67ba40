from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from shared.django_settings import service_settings
from shared.env import dev_mode, env_bool, env_float, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
APPS = ["django.contrib.postgres", "shared.events", "posts", "timelines"]
globals().update(service_settings("feed", base_dir=BASE_DIR, apps=APPS))

# The users service: internal API (profiles, mentions, follower ids) and the JWKS.
USERS_URL = env_str("USERS_URL", "http://127.0.0.1:8100" if dev_mode() else None)
USERS_TIMEOUT = env_float("USERS_TIMEOUT", 0.5)  # per attempt (read); the feed read must not wait long
USERS_DEADLINE = env_float("USERS_DEADLINE", 0.8)  # whole call, retries included

# Timelines (see docs/feed.md for how these were chosen).
TIMELINE_CAP = env_int("TIMELINE_CAP", 800)  # post ids kept per user in Redis
TIMELINE_TTL = env_int("TIMELINE_TTL", 7 * 24 * 3600)  # idle timelines leave Redis; rebuilt from Postgres
FANOUT_MAX_FOLLOWERS = env_int("FANOUT_MAX_FOLLOWERS", 100_000)  # above: pull at read time (hybrid)
# Back to fan-out only well below the threshold (hysteresis); unset: 80% of FANOUT_MAX_FOLLOWERS.
FANOUT_DEMOTE_FOLLOWERS = env_int("FANOUT_DEMOTE_FOLLOWERS", 0) or None
if FANOUT_DEMOTE_FOLLOWERS is not None and not 0 < FANOUT_DEMOTE_FOLLOWERS < FANOUT_MAX_FOLLOWERS:
    raise ImproperlyConfigured("FANOUT_DEMOTE_FOLLOWERS must be between 0 and FANOUT_MAX_FOLLOWERS (hysteresis)")
DEMOTE_ROWS_PER_DELIVERY = env_int("DEMOTE_ROWS_PER_DELIVERY", 50_000)  # timeline rows per demotion task
FANOUT_PAGE = env_int("FANOUT_PAGE", 5000)  # follower ids per internal API page
# up to this many followers (in one page), the fan-out runs in the post.created handler, no task per page
FANOUT_INLINE = env_int("FANOUT_INLINE", 1000)
FANOUT_BATCH = env_int("FANOUT_BATCH", 1000)  # rows per bulk_create
# a single-page author's follower ids kept in Redis for fan-out (timelines.followers); 0: ask users every post
FANOUT_FOLLOWERS_CACHE_SECONDS = env_int("FANOUT_FOLLOWERS_CACHE_SECONDS", 3600)
BACKFILL_POSTS = env_int("BACKFILL_POSTS", 50)  # a new followee's recent posts copied into the timeline
PROFILE_CACHE_SECONDS = env_int("PROFILE_CACHE_SECONDS", 3600)  # invalidated by user.updated anyway
# username → author (user timeline, mentions; authors/usernames.py): kept in step by user.updated and
# user.deleted, so long; a name nobody has is remembered briefly (a user registering it waits that long)
USERNAME_CACHE_SECONDS = env_int("USERNAME_CACHE_SECONDS", 24 * 3600)
USERNAME_MISS_SECONDS = env_int("USERNAME_MISS_SECONDS", 10)
# a reader's big followees cached for the home read (timelines.store); marked dirty on every change anyway
BIG_FOLLOWEES_CACHE_SECONDS = env_int("BIG_FOLLOWEES_CACHE_SECONDS", 3600)
# anti-spam: at most this many @mentions of one post notify (the rest stay text), and at most
# MENTIONS_PER_HOUR mentioned users per author per clock hour (beyond: 429, nothing posted)
MENTIONS_PER_POST = env_int("MENTIONS_PER_POST", 20)
MENTIONS_PER_HOUR = env_int("MENTIONS_PER_HOUR", 100)
POST_CACHE_SECONDS = env_int("POST_CACHE_SECONDS", 60)  # rendered post rows in Redis; bounds like_count staleness
SNOWFLAKE_NAMESPACES = ["posts"]  # id leases taken when a gunicorn worker starts (shared.ids.lease_early)
# bench/mix_bench.py --only home: GET /api/v1/feed/bench-floor, a minimal authenticated DRF view
# returning a constant 20-post page on this same stack (the framework's floor). Off everywhere else.
BENCH_FLOOR = env_bool("FEED_BENCH_FLOOR", False)
