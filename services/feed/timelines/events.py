"""Events feed consumes: user.followed / unfollowed / updated / deleted.

Each handler runs inside the transaction that records the event in the inbox, so its database
writes happen exactly once. Redis writes inside them are idempotent cache updates (ZADD/ZREM
of ids, profile SET): if the transaction rolls back, the event is retried and writes them
again, and an id the database does not have is skipped at read. Work that calls another
service (walking a new big author's followers) is queued after commit.
"""

from __future__ import annotations

from shared.events import Event, handler
from timelines import services


@handler("user.followed")
def on_user_followed(event: Event) -> None:
    services.follow_apply(follower_id=int(event.data["follower_id"]), followee_id=int(event.data["followee_id"]))


@handler("user.unfollowed")
def on_user_unfollowed(event: Event) -> None:
    services.unfollow_apply(follower_id=int(event.data["follower_id"]),
                            followee_id=int(event.data["followee_id"]))


@handler("user.updated")
def on_user_updated(event: Event) -> None:
    from authors.client import UserSummary
    from authors.selectors import author_cache_put

    data = event.data
    author_cache_put(summary=UserSummary(id=int(data["user_id"]), username=data["username"],
                                         display_name=data["display_name"], avatar_url=data["avatar_url"]))


@handler("user.deleted")
def on_user_deleted(event: Event) -> None:
    from authors.selectors import author_cache_forget

    user_id = int(event.data["user_id"])
    services.user_purge(user_id=user_id)
    author_cache_forget(user_id=user_id)
