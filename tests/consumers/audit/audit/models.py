from django.db import models


class AuditedPost(models.Model):
    """One row per post.created event this consumer applied (the inbox makes it once per event)."""

    event_id = models.UUIDField(unique=True)
    post_id = models.BigIntegerField()
    author_id = models.BigIntegerField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_post"
