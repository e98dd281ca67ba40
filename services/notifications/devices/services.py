"""Devices and push delivery."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from prometheus_client import Counter

from devices.models import Delivery, Device
from devices.providers import PushError, PushMessage, provider
from shared import redis_clients
from shared.errors import NotFound

logger = logging.getLogger("devices.push")
PUSHES = Counter("push_deliveries_total", "Notifications by push outcome", ["outcome"])
BATCH = 1000


def _token_lock_key(token: str) -> int:
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big", signed=True)


@transaction.atomic
def device_register(*, user_id: int, platform: str, token: str) -> tuple[Device, bool]:
    """Register a device token for the user; (device, created). A push token belongs to the
    account that registered it last: registering it moves it away from any other account (a phone
    that changed hands must not receive the previous owner's pushes). Re-registering updates the
    platform. Serialized per token by a transaction-scoped advisory lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_token_lock_key(token)])
    moved, _ = Device.objects.filter(token=token).exclude(user_id=user_id).delete()
    if moved:
        logger.info("push token moved to another account", extra={"user_id": user_id})
    existing = Device.objects.filter(user_id=user_id, token=token).first()
    if existing is not None:
        if existing.platform != platform:
            existing.platform = platform
            existing.save(update_fields=["platform"])
        return existing, False
    return Device.objects.create(user_id=user_id, platform=platform, token=token, created_at=timezone.now()), True


@transaction.atomic
def device_delete(*, user_id: int, token: str) -> None:
    deleted, _ = Device.objects.filter(user_id=user_id, token=token).delete()
    if not deleted:
        raise NotFound("No such device for this user.")


@transaction.atomic
def devices_delete_for_user(*, user_id: int) -> None:
    Device.objects.filter(user_id=user_id).delete()
    # pushes to them, and pushes about what they did that have not gone out yet
    Delivery.objects.filter(Q(user_id=user_id) | Q(actor_id=user_id, status=Delivery.Status.PENDING)).delete()


def deliveries_create(*, notifications) -> None:
    """In the notification's transaction: queue each for push; the flush is scheduled on commit.

    A recipient with no registered device (most of them) gets its delivery recorded `no_device` at
    once, as a flush would have found it, and no flush: one indexed lookup here instead of a
    `devices.push_flush` task per recipient (a broker hop, a transaction and an update). A device
    registered after this transaction read the devices gets the recipient's later notifications."""
    if not notifications:
        return
    now = timezone.now()
    recipients = {n.recipient_id for n in notifications}
    with_device = set(Device.objects.filter(user_id__in=recipients).values_list("user_id", flat=True).distinct())
    Delivery.objects.bulk_create(
        [
            Delivery(
                user_id=n.recipient_id,
                notification_id=n.id,
                kind=n.kind,
                actor_id=n.actor_id,
                created_at=now,
                next_attempt_at=now,
                **({} if n.recipient_id in with_device else {"status": Delivery.Status.NO_DEVICE, "sent_at": now}),
            )
            for n in notifications
        ],
        batch_size=BATCH,
    )
    deliveries_queued(pending=sorted(with_device), no_device=sum(1 for n in notifications if n.recipient_id not in with_device))


def deliveries_queued(*, pending: list[int], no_device: int) -> None:
    """After the deliveries' transaction commits: count those recorded `no_device` and schedule a
    flush for each recipient with a pending one."""
    if no_device:
        transaction.on_commit(lambda: PUSHES.labels("no_device").inc(no_device))
    if pending:
        transaction.on_commit(lambda: push_schedule(user_ids=pending))


def deliveries_forget(*, notification_ids: list[int]) -> None:
    """Pending pushes of notifications that were replaced (a grouped like) go with them."""
    Delivery.objects.filter(notification_id__in=notification_ids, status=Delivery.Status.PENDING).delete()


def push_allowance_take(user_id: int) -> bool:
    """One push to the user counted against PUSH_MAX_PER_HOUR (a Redis counter per clock hour);
    False once the cap is reached. Fails open: without Redis, pushes are not capped."""
    from notifications.unread import _redis

    key = f"push:sent:{user_id}:{int(time.time() // 3600)}"
    try:
        pipe = _redis().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 3700)
        count = int(pipe.execute()[0])
    except Exception as exc:
        logger.warning("push cap unavailable; pushing", extra={"error": str(exc)})
        return True
    return count <= settings.PUSH_MAX_PER_HOUR


def push_schedule(*, user_ids: list[int]) -> None:
    """One flush per user per coalescing window (a Redis SET NX marks it scheduled). If Redis or
    the broker is down, the periodic sweep finds the pending deliveries instead."""
    from devices.tasks import push_flush

    window = settings.PUSH_COALESCE_SECONDS
    for user_id in user_ids:
        try:
            if redis_clients.client().set(f"push:scheduled:{user_id}", 1, nx=True, px=max(1, int(window * 1000))):
                push_flush.apply_async(args=(user_id,), countdown=window)
        except Exception as exc:
            logger.warning("push schedule failed; the sweep will deliver", extra={"error": str(exc)})


def _message_text(deliveries: list[Delivery]) -> tuple[str, str]:
    from notifications.actors import actor_profiles

    if len(deliveries) > 1:
        return "Social", f"You have {len(deliveries)} new notifications"
    from notifications.models import Notification

    only = deliveries[0]
    name = actor_profiles(ids=[only.actor_id])[only.actor_id].username or "Someone"
    verb = {"follow": "started following you", "like": "liked your post", "mention": "mentioned you"}[only.kind]
    count = Notification.objects.filter(id=only.notification_id).values_list("actor_count", flat=True).first() or 1
    if count == 2:
        name = f"{name} and 1 other"
    elif count > 2:
        name = f"{name} and {count - 1} others"
    return "Social", f"{name} {verb}"


def push_flush(*, user_id: int) -> int:
    """Push every due delivery of the user as one message per device; returns how many were sent.
    Raises PushError (after recording the attempt) when a retry should follow."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(user_id=user_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now + timedelta(seconds=1))
            .order_by("id")[:BATCH]
        )
        if not due:
            return 0
        ids = [d.id for d in due]
        devices = list(Device.objects.filter(user_id=user_id).order_by("id").values("platform", "token"))
        if not devices:
            Delivery.objects.filter(id__in=ids).update(status=Delivery.Status.NO_DEVICE, sent_at=now)
            PUSHES.labels("no_device").inc(len(ids))
            return 0
        if due[0].attempts == 0 and not push_allowance_take(user_id):  # a retry was counted the first time
            Delivery.objects.filter(id__in=ids).update(status=Delivery.Status.CAPPED, sent_at=now)
            PUSHES.labels("capped").inc(len(ids))
            return 0
        title, body = _message_text(due)
        notification_ids = [str(d.notification_id) for d in due]
        error: PushError | None = None
        for device in devices:
            push_id = hashlib.sha256(f"{device['token']}|{','.join(notification_ids)}".encode()).hexdigest()[:32]
            try:
                provider().send(
                    PushMessage(
                        push_id=push_id,
                        user_id=user_id,
                        platform=device["platform"],
                        token=device["token"],
                        title=title,
                        body=body,
                        notification_ids=notification_ids,
                    )
                )
            except PushError as exc:
                error = exc
        if error is None:
            Delivery.objects.filter(id__in=ids).update(
                status=Delivery.Status.SENT, sent_at=timezone.now(), attempts=F("attempts") + 1
            )
            PUSHES.labels("sent").inc(len(ids))
            return len(ids)
        attempts = due[0].attempts + 1
        give_up = error.permanent or attempts >= settings.PUSH_MAX_ATTEMPTS
        if give_up:
            Delivery.objects.filter(id__in=ids).update(
                status=Delivery.Status.FAILED, attempts=F("attempts") + 1, last_error=str(error)[:2000]
            )
            PUSHES.labels("failed").inc(len(ids))
            logger.error(
                "push given up", extra={"user_id": user_id, "deliveries": len(ids), "attempts": attempts, "error": str(error)}
            )
            return 0
        delay = push_backoff(attempts)
        Delivery.objects.filter(id__in=ids).update(
            attempts=F("attempts") + 1, last_error=str(error)[:2000], next_attempt_at=now + timedelta(seconds=delay)
        )
        PUSHES.labels("retry").inc(len(ids))
    raise PushRetry(str(error), delay)


class PushRetry(Exception):
    def __init__(self, detail: str, delay: float):
        super().__init__(detail)
        self.delay = delay


def push_backoff(attempts: int) -> float:
    return min(300.0, settings.PUSH_RETRY_BACKOFF * 2 ** (attempts - 1))


def push_due_users(*, limit: int = 1000) -> list[int]:
    """Users with deliveries due and not just scheduled (older than twice the coalescing window)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=2 * settings.PUSH_COALESCE_SECONDS)
    return list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now, created_at__lte=cutoff)
        .order_by()
        .values_list("user_id", flat=True)
        .distinct()[:limit]
    )
