import uuid

from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from shared.users_api.validation import USERNAME_MAX_LENGTH


class User(models.Model):
    username = models.CharField(max_length=USERNAME_MAX_LENGTH)
    email = models.CharField(max_length=254)
    password = models.CharField(max_length=256)
    display_name = models.CharField(max_length=50, blank=True, default="")
    bio = models.CharField(max_length=300, blank=True, default="")
    avatar_url = models.CharField(max_length=500, blank=True, default="")
    # Denormalized so a profile read is one row; kept exact by F() updates in follows.services.
    followers_count = models.IntegerField(default=0)
    following_count = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Unique case-insensitively; these functional indexes also serve every lookup by name/email.
            models.UniqueConstraint(Lower("username"), name="user_username_ci_uniq"),
            models.UniqueConstraint(Lower("email"), name="user_email_ci_uniq"),
        ]

    def __str__(self) -> str:
        return self.username


class RefreshToken(models.Model):
    """An opaque refresh token, stored as its SHA-256. Single use: each refresh spends one and
    issues the next in the same family; presenting a spent one revokes the whole family."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    family = models.UUIDField(default=uuid.uuid4)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True)
    revoked_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["family"], name="refresh_family_idx")]

    def __str__(self) -> str:
        return f"refresh token {self.pk} of user {self.user_id}"
