"""Events feed consumes: user.followed / unfollowed / updated / deleted, and its own
post.created / post.deleted (fan-out and removal: durable because they ride on the outbox).

Each handler runs inside the transaction that records the event in the inbox, so its database
writes happen exactly once. Redis writes inside them are idempotent cache updates (ZADD/ZREM
of ids, profile SET): if the transaction rolls back, the event is retried and writes them
again, and an id the database does not have is skipped at read. Work that calls another
service (walking a new big author's followers) is queued after commit.

post.created walks the author's followers (users' internal API) inside the handler and queues
one `feed.fanout_deliver` task per page *before* the inbox commits. That is deliberate, not an
oversight of "never .delay() in a transaction": a delivery reads only the post, which was
committed before the event existed, so an early delivery is correct; and queuing before the
commit is what makes the fan-out durable — if the worker dies before the commit, the event is
redelivered and the pages are queued again (deliveries are idempotent); once the inbox row is
committed, every page is already in the broker. A users outage fails the handler, which the
backbone retries with backoff (and dead-letters in the end), instead of losing the fan-out.
"""

from __future__ import annotations

import time

from shared import revocation
from shared.events import Event, handler
from timelines import services


@handler("post.created")
def on_post_created(event: Event) -> None:
    from timelines import tasks

    services.fanout_pages(
        post_id=int(event.data["post_id"]),
        author_id=int(event.data["author_id"]),
        deliver=lambda *, post_id, user_ids: tasks.fanout_deliver.delay(post_id, user_ids, time.time()),
    )


@handler("post.deleted")
def on_post_deleted(event: Event) -> None:
    services.post_remove(post_id=int(event.data["post_id"]))


@handler("user.followed")
def on_user_followed(event: Event) -> None:
    services.follow_apply(follower_id=int(event.data["follower_id"]), followee_id=int(event.data["followee_id"]))


@handler("user.unfollowed")
def on_user_unfollowed(event: Event) -> None:
    services.unfollow_apply(follower_id=int(event.data["follower_id"]), followee_id=int(event.data["followee_id"]))


@handler("user.updated")
def on_user_updated(event: Event) -> None:
    from authors.client import UserSummary
    from authors.selectors import author_cache_put
    from authors.usernames import username_put

    data = event.data
    summary = UserSummary(
        id=int(data["user_id"]), username=data["username"], display_name=data["display_name"], avatar_url=data["avatar_url"]
    )
    username_put(summary=summary)  # raises while Redis is away: the event is retried
    author_cache_put(summary=summary)


@handler("user.deleted")
def on_user_deleted(event: Event) -> None:
    from authors.selectors import author_cache_forget
    from authors.usernames import username_gone

    user_id = int(event.data["user_id"])
    revocation.revoke_user(user_id)  # again, in case the users service could not write it
    services.user_purge(user_id=user_id)
    username_gone(user_id=user_id)  # raises while Redis is away: the event is retried
    author_cache_forget(user_id=user_id)
