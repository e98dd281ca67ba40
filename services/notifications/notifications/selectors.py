"""Reads for notifications: keyset pages on (recipient_id, id DESC), narrow values()."""

from __future__ import annotations

from notifications.models import Notification

LIST_FIELDS = ("id", "kind", "actor_id", "actor_count", "post_id", "created_at", "read_at")


def notifications_page(*, recipient_id: int, unread_only: bool, before_id: int | None, limit: int) -> list[dict]:
    """Up to limit + 1 rows, newest first (the extra row tells there is a next page)."""
    rows = Notification.objects.filter(recipient_id=recipient_id)
    if unread_only:
        rows = rows.filter(read_at__isnull=True)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return list(rows.order_by("-id").values(*LIST_FIELDS)[: limit + 1])
