from django.contrib.postgres.indexes import HashIndex
from django.db import models
from django.db.models import Q


class Device(models.Model):
    class Platform(models.TextChoices):
        IOS = "ios"
        ANDROID = "android"
        WEB = "web"

    user_id = models.BigIntegerField()
    platform = models.CharField(max_length=10, choices=Platform.choices)
    token = models.CharField(max_length=4096)
    created_at = models.DateTimeField()

    class Meta:
        db_table = "device"
        constraints = [
            # a token once per user; also serves "this user's devices" (leading column)
            models.UniqueConstraint(fields=["user_id", "token"], name="device_user_token_uniq"),
        ]
        # "who holds this token": a registration moves the token to the registering account.
        # Hash, not btree: a token may be up to 4096 characters, beyond a btree entry's limit.
        indexes = [HashIndex(fields=["token"], name="device_token_hash_idx")]

    def __str__(self) -> str:
        return f"{self.platform} device of {self.user_id}"


class Delivery(models.Model):
    """A notification waiting to be pushed (written in the notification's transaction, so none is
    lost); a flush sends every pending one of a user as one push and marks them."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        NO_DEVICE = "no_device"
        FAILED = "failed"  # gave up after PUSH_MAX_ATTEMPTS (or a permanent provider error)
        CAPPED = "capped"  # not pushed: the recipient had PUSH_MAX_PER_HOUR pushes this hour (still listed)

    user_id = models.BigIntegerField()
    notification_id = models.BigIntegerField()
    kind = models.CharField(max_length=16)
    actor_id = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "delivery"
        indexes = [
            models.Index(fields=["user_id", "id"], condition=Q(status="pending"), name="delivery_pending_user_idx"),
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="delivery_pending_due_idx"),
        ]

    def __str__(self) -> str:
        return f"delivery of {self.notification_id} ({self.status})"
