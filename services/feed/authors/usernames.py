"""Username → author lookups for the user timeline (`?author=`) and a post's @mentions: Redis first,
one batch call to users' internal API for the misses.

Two kinds of key, plain strings on the request-path Redis client (shared.redis_clients):

- `uname:v1:{lower-cased name}` → `{id}:{summary JSON}` (id, username, display_name, avatar_url)
  for a user, for USERNAME_CACHE_SECONDS; or `-` for a name users says nobody has, for
  USERNAME_MISS_SECONDS (the negative entry: a missing name asks users at most once per window);
- `uname:v1:id:{id}` → the lower-cased name the user currently has (the *owner* entry), or `-`
  once the user is deleted (a tombstone, kept for USERNAME_CACHE_SECONDS).

A name entry counts only while its user's owner entry names it: the read (one Lua call for every
name asked) follows each entry to its owner entry and treats anything else as a miss. So
`user.deleted` (the owner entry becomes `-`) makes every name entry of that user a miss at once,
and a rename in `user.updated` (the owner entry takes the new name) does the same for the old
name; neither handler has to know which names were cached. Fills run in a Lua call too, which
keeps what the events wrote: a fill never writes for a user whose owner entry is `-` (deleted)
or names another name (renamed after the fill's users call), and never replaces an entry of the
same user (`user.updated` may have written a newer profile since). A fill that read users before
an event therefore cannot bring back what the event changed.

Degrades: without Redis every name is a miss and nothing is filled (users answers as before); with
users away, cached names still resolve, and a miss raises the users client's error for the caller
to turn into its 503. The scripts read the owner keys they are not given in KEYS: fine on one Redis,
as timelines.store.page_with_rows (docs/decisions.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from django.conf import settings
from redis import Redis
from redis.commands.core import Script

from authors.client import UserSummary, users_client
from shared import redis_clients
from shared.users_api import MAX_IDS_PER_CALL, is_username

log = logging.getLogger("feed.authors")

PREFIX = "uname:v1:"
OWNER_PREFIX = "uname:v1:id:"
_MISS = b"-"  # a name entry: nobody has this name


def name_key(name: str) -> str:
    return f"{PREFIX}{name.lower()}"


def owner_key(user_id: int) -> str:
    return f"{OWNER_PREFIX}{user_id}"


def _value(summary: UserSummary) -> str:
    return f"{summary.id}:{json.dumps(summary.as_dict(), separators=(',', ':'))}"


def _summary(raw: bytes) -> UserSummary:
    _, _, body = raw.partition(b":")
    return UserSummary.from_json(json.loads(body))


# KEYS: the token's revocation keys (shared.revocation; none for a mention), then the name keys;
# ARGV: how many revocation keys, then the lower-cased names, in the same order as their keys.
# {1} when a revocation key exists (nothing else is read); else {0, entry per name}: the value, `-`
# (a known miss) or false (absent, or an entry its owner entry does not confirm).
_READ = (
    """
local r = tonumber(ARGV[1])
if r > 0 and redis.call('EXISTS', unpack(KEYS, 1, r)) > 0 then return {1} end
local out = {0}
for i = r + 1, #KEYS do
  local name = ARGV[i - r + 1]
  local v = redis.call('GET', KEYS[i])
  if v and v ~= '-' then
    local id = string.match(v, '^(%d+):')
    if not id or redis.call('GET', '"""
    + OWNER_PREFIX
    + """' .. id) ~= name then v = false end
  end
  out[i - r + 1] = v
end
return out
"""
)

# KEYS: name key, owner key (empty string for a miss) per name; ARGV: ttl, miss ttl, then per name
# its lower-cased name, its user id ('' for a miss) and its value. A miss replaces anything but an
# entry its owner confirms; a user's entry is written unless the user is gone, owns another name
# now, or already has a confirmed entry here.
_FILL = (
    """
local ttl, miss_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local function confirmed(v, name)
  if not v or v == '-' then return nil end
  local id = string.match(v, '^(%d+):')
  if id and redis.call('GET', '"""
    + OWNER_PREFIX
    + """' .. id) == name then return id end
  return nil
end
for i = 1, #KEYS, 2 do
  local key, owner = KEYS[i], KEYS[i + 1]
  local j = 3 + (i - 1) / 2 * 3
  local name, id, value = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  local current = redis.call('GET', key)
  if id == '' then
    if not confirmed(current, name) then redis.call('SET', key, '-', 'EX', miss_ttl) end
  else
    local owned = redis.call('GET', owner)
    if owned ~= '-' and (not owned or owned == name) and confirmed(current, name) ~= id then
      redis.call('SET', key, value, 'EX', ttl)
      redis.call('SET', owner, name, 'EX', ttl)
    end
  end
end
return 0
"""
)

# KEYS: name key, owner key; ARGV: ttl, lower-cased name, value. user.updated: the user owns this
# name with this profile from now on (an old name's entry stops counting). Not for a deleted user.
_PUT = """
if redis.call('GET', KEYS[2]) == '-' then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'EX', tonumber(ARGV[1]))
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[1]))
return 1
"""

# KEYS: owner key; ARGV: ttl, the name-key prefix. user.deleted: the tombstone (every entry of the
# user stops counting), and the entry of the name it owned is dropped.
_GONE = """
local owned = redis.call('GET', KEYS[1])
if owned and owned ~= '-' then redis.call('DEL', ARGV[2] .. owned) end
redis.call('SET', KEYS[1], '-', 'EX', tonumber(ARGV[1]))
return 0
"""

_scripts: dict[tuple[int, str], Script] = {}


def _script(conn: Redis, source: str) -> Script:
    found = _scripts.get((id(conn), source))
    if found is None:
        found = _scripts[(id(conn), source)] = conn.register_script(source)
    return found


class Revoked(Exception):
    """One of the revocation keys given to summaries_by_username exists: the token is refused."""


def summaries_by_username(names: list[str], *, revocation_keys: Sequence[str] = ()) -> dict[str, UserSummary]:
    """Profiles of the names that exist, keyed by lower-cased username, as
    `users_client().summaries_by_username` answers (at most MAX_IDS_PER_CALL names; a string that
    cannot be a username names nobody): one Redis call for every name, one users call for the
    names Redis does not know. Raises the users client's DownstreamError when that call fails.

    `revocation_keys` (shared.revocation's, in this Redis) are checked in the same call: Revoked
    when one exists. With them, Redis unreachable raises instead of asking users (the caller
    cannot tell whether the token is revoked)."""
    wanted = list(dict.fromkeys(n.lower() for n in names if is_username(n)))[:MAX_IDS_PER_CALL]
    if not wanted:
        return {}
    conn = redis_clients.client()
    cached: list[bytes | None]
    try:
        answer = _script(conn, _READ)(
            keys=[*revocation_keys, *(name_key(n) for n in wanted)], args=[len(revocation_keys), *wanted]
        )
        redis_up = True
    except redis_clients.UNAVAILABLE as exc:
        if revocation_keys:
            raise
        log.warning("username cache unavailable, asking users: %s", exc)
        answer, redis_up = [0, *([None] * len(wanted))], False
    if answer[0]:
        raise Revoked()
    cached = answer[1:]
    found: dict[str, UserSummary] = {}
    missing: list[str] = []
    for name, raw in zip(wanted, cached, strict=True):
        if raw is None:
            missing.append(name)
        elif raw != _MISS:
            found[name] = _summary(raw)
    if missing:
        fetched = users_client().summaries_by_username(missing)
        found.update(fetched)
        if redis_up:
            _fill(conn, missing, fetched)
    return found


def _fill(conn: Redis, names: list[str], fetched: dict[str, UserSummary]) -> None:
    keys: list[str] = []
    args: list[str | int] = [settings.USERNAME_CACHE_SECONDS, settings.USERNAME_MISS_SECONDS]
    for name in names:
        summary = fetched.get(name)
        keys += [name_key(name), owner_key(summary.id) if summary else ""]
        args += [name, summary.id, _value(summary)] if summary else [name, "", ""]
    redis_clients.best_effort("username cache fill", _script(conn, _FILL), keys=keys, args=args)


def username_put(*, summary: UserSummary) -> None:
    """user.updated: the user's name resolves to this profile (and an old name of theirs no longer
    does). Raises when Redis is away: the handler is retried."""
    conn = redis_clients.client()
    _script(conn, _PUT)(
        keys=[name_key(summary.username), owner_key(summary.id)],
        args=[settings.USERNAME_CACHE_SECONDS, summary.username.lower(), _value(summary)],
    )


def username_gone(*, user_id: int) -> None:
    """user.deleted: no cached name resolves to this user any more. Raises when Redis is away."""
    conn = redis_clients.client()
    _script(conn, _GONE)(keys=[owner_key(user_id)], args=[settings.USERNAME_CACHE_SECONDS, PREFIX])
