"""Writes for notifications: made from events, marked read by their recipient, removed with users/posts."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from devices import services as device_services
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Subquery
from django.utils import timezone

from notifications.models import Notification
from notifications.unread import unread_changed

BATCH = 1000
GROUP_IDS_KEPT = 200  # likers remembered per grouped notification, to tell a repeat from a new one


# One statement for a notification per recipient and its push delivery: the notifications, then a
# delivery for each, recorded `no_device` at once for a recipient without a registered device (most
# of them) and `pending` otherwise (devices.services.deliveries_create is the same rule for one row).
_CREATE = """
WITH made AS (
    INSERT INTO notification (recipient_id, kind, actor_id, post_id, event_id, created_at, actor_count, actor_ids)
    SELECT r, %(kind)s, %(actor)s, %(post)s, %(event)s, %(created)s, 1, ARRAY[%(actor)s]::bigint[]
    FROM unnest(%(recipients)s::bigint[]) AS r
    RETURNING id, recipient_id
), queued AS (
    INSERT INTO delivery (user_id, notification_id, kind, actor_id, status, attempts, last_error, created_at,
                          next_attempt_at, sent_at)
    SELECT made.recipient_id, made.id, %(kind)s, %(actor)s,
           CASE WHEN dev.present THEN 'pending' ELSE 'no_device' END, 0, '', %(now)s, %(now)s,
           CASE WHEN dev.present THEN NULL ELSE %(now)s::timestamptz END
    FROM made, LATERAL (SELECT EXISTS (SELECT 1 FROM device WHERE device.user_id = made.recipient_id) AS present) AS dev
    RETURNING user_id, status = 'pending' AS pending
)
SELECT user_id, pending FROM queued
"""


@transaction.atomic(savepoint=False)
def notifications_create(
    *,
    kind: str,
    actor_id: int,
    recipient_ids: Iterable[int],
    event_id: uuid.UUID,
    created_at: datetime,
    post_id: int | None = None,
) -> list[int]:
    """One notification per recipient (never to the actor), queued for push delivery, in one
    statement (no savepoint: the caller's transaction, the event handler's, holds it). Returns the
    recipients notified."""
    recipients = sorted({r for r in recipient_ids if r != actor_id})
    if not recipients:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _CREATE,
            {
                "kind": kind,
                "actor": actor_id,
                "post": post_id,
                "event": event_id,
                "created": created_at,
                "recipients": recipients,
                "now": timezone.now(),
            },
        )
        queued = cursor.fetchall()
    device_services.deliveries_queued(
        pending=sorted(user for user, pending in queued if pending), no_device=sum(1 for _, pending in queued if not pending)
    )
    unread_changed(*recipients)
    return recipients


def _lock(*parts: object) -> None:
    """Serialize the grouping decisions about one (recipient, subject) across worker processes."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])


@transaction.atomic
def follow_notify(*, follower_id: int, followee_id: int, event_id: uuid.UUID, created_at: datetime) -> bool:
    """At most one follow notification per follower per NOTIFY_GROUP_WINDOW: follow/unfollow flips
    notify (and push) once. True when a notification was made."""
    if follower_id == followee_id:
        return False
    _lock("follow", followee_id, follower_id)
    since = created_at - timedelta(seconds=settings.NOTIFY_GROUP_WINDOW)
    if Notification.objects.filter(
        recipient_id=followee_id, actor_id=follower_id, kind=Notification.Kind.FOLLOW, created_at__gte=since
    ).exists():
        return False
    return bool(
        notifications_create(
            kind=Notification.Kind.FOLLOW,
            actor_id=follower_id,
            recipient_ids=[followee_id],
            event_id=event_id,
            created_at=created_at,
        )
    )


@transaction.atomic
def like_notify(*, liker_id: int, author_id: int, post_id: int, event_id: uuid.UUID, created_at: datetime) -> bool:
    """Likes of one post are one notification while it is unread: a new liker replaces it with
    one that counts them all ("alice and 3 others liked your post"), newest first in the list and
    pushed once more (subject to the push cap); a liker already counted (like/unlike flips)
    notifies nothing within NOTIFY_GROUP_WINDOW. True when a notification was made."""
    if liker_id == author_id:
        return False
    _lock("like", author_id, post_id)
    since = created_at - timedelta(seconds=settings.NOTIFY_GROUP_WINDOW)
    recent = list(
        Notification.objects.filter(recipient_id=author_id, post_id=post_id, kind=Notification.Kind.LIKE, created_at__gte=since)
        .order_by("-id")
        .values("id", "actor_id", "actor_ids", "actor_count", "read_at")[:20]
    )
    if any(liker_id == r["actor_id"] or liker_id in r["actor_ids"] for r in recent):
        return False
    head = next((r for r in recent if r["read_at"] is None), None)
    count, ids = 1, [liker_id]
    if head is not None:
        count = head["actor_count"] + 1
        ids = [liker_id, *head["actor_ids"]][:GROUP_IDS_KEPT]
        Notification.objects.filter(recipient_id=author_id, id=head["id"]).delete()
        device_services.deliveries_forget(notification_ids=[head["id"]])
    row = Notification.objects.create(
        recipient_id=author_id,
        kind=Notification.Kind.LIKE,
        actor_id=liker_id,
        post_id=post_id,
        event_id=event_id,
        created_at=created_at,
        actor_count=count,
        actor_ids=ids,
    )
    device_services.deliveries_create(notifications=[row])
    unread_changed(author_id)
    return True


@transaction.atomic
def notifications_mark_read(*, recipient_id: int, ids: list[int] | None = None, mark_all: bool = False) -> int:
    """Mark the caller's own notifications read (others' ids are ignored), 1,000 rows per statement."""
    now = timezone.now()
    mine_unread = Notification.objects.filter(recipient_id=recipient_id, read_at__isnull=True)
    updated = 0
    if mark_all:
        while True:
            batch = mine_unread.order_by().values("id")[:BATCH]
            count = Notification.objects.filter(recipient_id=recipient_id, id__in=Subquery(batch)).update(read_at=now)
            updated += count
            if count < BATCH:
                break
    else:
        wanted = ids or []
        for start in range(0, len(wanted), BATCH):
            updated += mine_unread.filter(id__in=wanted[start : start + BATCH]).update(read_at=now)
    if updated:
        unread_changed(recipient_id)
    return updated


@transaction.atomic
def notifications_delete_for_user(*, user_id: int) -> int:
    """A deleted account: its notifications, and those it caused for others, go."""
    affected = set(
        Notification.objects.filter(actor_id=user_id, read_at__isnull=True).values_list("recipient_id", flat=True).distinct()
    )
    deleted, _ = Notification.objects.filter(recipient_id=user_id).delete()
    deleted_by_actor, _ = Notification.objects.filter(actor_id=user_id).delete()
    unread_changed(user_id, *affected)
    return deleted + deleted_by_actor


@transaction.atomic
def notifications_delete_for_post(*, post_id: int) -> int:
    affected = set(
        Notification.objects.filter(post_id=post_id, read_at__isnull=True).values_list("recipient_id", flat=True).distinct()
    )
    deleted, _ = Notification.objects.filter(post_id=post_id).delete()
    unread_changed(*affected)
    return deleted
