"""Writes for notifications: made from events, marked read by their recipient, removed with users/posts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from devices import services as device_services
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from notifications.models import Notification
from notifications.unread import unread_changed

BATCH = 1000


@transaction.atomic
def notifications_create(*, kind: str, actor_id: int, recipient_ids: Iterable[int], event_id: uuid.UUID,
                         created_at: datetime, post_id: int | None = None) -> list[Notification]:
    """One notification per recipient (never to the actor), queued for push delivery."""
    recipients = sorted({r for r in recipient_ids if r != actor_id})
    rows = [Notification(recipient_id=r, kind=kind, actor_id=actor_id, post_id=post_id, event_id=event_id,
                         created_at=created_at) for r in recipients]
    created = Notification.objects.bulk_create(rows, batch_size=BATCH)
    device_services.deliveries_create(notifications=created)
    unread_changed(*recipients)
    return created


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
            updated += mine_unread.filter(id__in=wanted[start:start + BATCH]).update(read_at=now)
    if updated:
        unread_changed(recipient_id)
    return updated


@transaction.atomic
def notifications_delete_for_user(*, user_id: int) -> int:
    """A deleted account: its notifications, and those it caused for others, go."""
    affected = set(Notification.objects.filter(actor_id=user_id, read_at__isnull=True)
                   .values_list("recipient_id", flat=True).distinct())
    deleted, _ = Notification.objects.filter(recipient_id=user_id).delete()
    deleted_by_actor, _ = Notification.objects.filter(actor_id=user_id).delete()
    unread_changed(user_id, *affected)
    return deleted + deleted_by_actor


@transaction.atomic
def notifications_delete_for_post(*, post_id: int) -> int:
    affected = set(Notification.objects.filter(post_id=post_id, read_at__isnull=True)
                   .values_list("recipient_id", flat=True).distinct())
    deleted, _ = Notification.objects.filter(post_id=post_id).delete()
    unread_changed(*affected)
    return deleted
