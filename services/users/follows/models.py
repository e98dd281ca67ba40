from accounts.models import User
from django.db import models
from django.utils import timezone


class Follow(models.Model):
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Serves "does A follow B" and the following list (follower = A, newest first by id).
            models.UniqueConstraint(fields=["follower", "followee"], name="follow_pair_uniq"),
            models.CheckConstraint(condition=~models.Q(follower=models.F("followee")), name="follow_not_self"),
        ]
        indexes = [
            # followers list, newest first (keyset on id)
            models.Index(fields=["followee", "-id"], name="follow_followee_id_idx"),
            # following list, newest first (keyset on id)
            models.Index(fields=["follower", "-id"], name="follow_follower_id_idx"),
            # fan-out: a user's follower ids in id order (keyset on follower_id), index-only
            models.Index(fields=["followee", "follower"], name="follow_followee_follower_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.follower_id} → {self.followee_id}"
