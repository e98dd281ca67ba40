"""Events notifications consumes (catalogue: shared/src/shared/events/catalogue.py). Thin: each
handler turns the payload into a service call; the inbox makes each run once per event."""

from __future__ import annotations

from devices import services as device_services

from notifications import services
from notifications.actors import actor_cache_forget_on_commit, actor_cache_put_on_commit
from notifications.models import Notification
from shared import revocation
from shared.events import Event, handler
from shared.users_api import UserSummary


@handler("user.followed")
def on_user_followed(event: Event) -> None:
    services.follow_notify(
        follower_id=int(event.data["follower_id"]),
        followee_id=int(event.data["followee_id"]),
        event_id=event.id,
        created_at=event.occurred_at,
    )


@handler("post.liked")
def on_post_liked(event: Event) -> None:
    # liking your own post notifies nobody; likes of one post are grouped
    services.like_notify(
        liker_id=int(event.data["liker_id"]),
        author_id=int(event.data["author_id"]),
        post_id=int(event.data["post_id"]),
        event_id=event.id,
        created_at=event.occurred_at,
    )


@handler("post.created")
def on_post_created(event: Event) -> None:
    mentioned = [int(i) for i in event.data["mentioned_user_ids"]]
    if mentioned:
        services.notifications_create(
            kind=Notification.Kind.MENTION,
            actor_id=int(event.data["author_id"]),
            recipient_ids=mentioned,
            post_id=int(event.data["post_id"]),
            event_id=event.id,
            created_at=event.occurred_at,
        )


@handler("post.deleted")
def on_post_deleted(event: Event) -> None:
    services.notifications_delete_for_post(post_id=int(event.data["post_id"]))


@handler("user.updated")
def on_user_updated(event: Event) -> None:
    data = event.data
    actor_cache_put_on_commit(
        UserSummary(
            id=int(data["user_id"]), username=data["username"], display_name=data["display_name"], avatar_url=data["avatar_url"]
        )
    )


@handler("user.deleted")
def on_user_deleted(event: Event) -> None:
    user_id = int(event.data["user_id"])
    revocation.revoke_user(user_id)  # again, in case the users service could not write it
    services.notifications_delete_for_user(user_id=user_id)
    device_services.devices_delete_for_user(user_id=user_id)
    actor_cache_forget_on_commit(user_id)
