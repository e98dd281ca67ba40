"""Platform tables, one set per service, in that service's schema."""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class IdempotencyKey(models.Model):
    """One claimed Idempotency-Key (shared.idempotency). Inserted, completed and committed in the
    same transaction as the write it protects, so a committed row always has its response stored
    and a write that rolled back leaves no row."""

    key = models.CharField(max_length=200, primary_key=True)  # scope:user id:sha256(client key)
    fingerprint = models.CharField(max_length=64)  # sha256 of method, path and body
    status = models.PositiveSmallIntegerField(null=True)  # null only inside the claiming transaction
    body = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "idempotency_key"
        indexes = [models.Index(fields=["expires_at"], name="idempotency_key_expires_idx")]

    def __str__(self) -> str:
        return self.key
