"""`Idempotency-Key` for writes: a replay returns the first response.

    class PostCreateApi(APIView):
        @idempotent(scope="posts.create")
        def post(self, request): ...

Keys are scoped per user (and per operation), so two users' keys never collide. The record is a
row of the service's own `idempotency_key` table (shared.platform, in the service's schema), and
it lives in the write's own transaction:

1. open a transaction; take a transaction-level advisory lock on the key
   (`pg_try_advisory_xact_lock`, never waiting);
2. a committed row → replay it; no row → insert a claim (fingerprint of method, path and body;
   no response yet);
3. run the handler inside that transaction (its own `atomic()` blocks become savepoints);
4. store the response (status and body; 2xx and 4xx) in the claim row and commit: the write and
   its stored response become visible together, or neither does.

Another request with the key then gets:
- the stored response, with `Idempotent-Replayed: true`, when the fingerprint matches;
- 422 `idempotency-key-reused` when the body (or path) differs;
- 409 `idempotency-key-in-progress` while the first is still running (its lock is held).
A 5xx response or an exception rolls the whole transaction back (the write and the claim), so
the client's retry runs again against a database the failed attempt did not change. A process
killed at any point cannot leave a key half-done: before the commit Postgres rolls everything
back and releases the lock; after it, the response is stored. Keys expire after TTL_SECONDS
(an expired row is replaced by the next request with that key) and are deleted by the
service's beat (`prune_idempotency_keys`, task `platform.idempotency_prune`). Redis is not used.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from shared.problems import CONTENT_TYPE, Problem

HEADER = "Idempotency-Key"
TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
PRUNE_BATCH = 1000


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.path.encode() + b"\0")
    digest.update(request.body or b"")
    return digest.hexdigest()


def _clean_key(raw: str) -> str:
    if not (1 <= len(raw) <= MAX_KEY_LENGTH) or not raw.isascii() or not raw.isprintable():
        raise ValidationError({HEADER: [f"1 to {MAX_KEY_LENGTH} printable ASCII characters."]})
    return raw


def _try_lock(key: str) -> bool:
    """The key's transaction-level advisory lock, without waiting; released at commit/rollback."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [key])
        return bool(cursor.fetchone()[0])


def idempotent(*, scope: str):
    """Decorate an APIView handler so requests with an Idempotency-Key are applied at most once."""

    def decorate(handler):
        @functools.wraps(handler)
        def wrapper(view, request, *args, **kwargs):
            from shared.platform.models import IdempotencyKey

            raw = request.headers.get(HEADER)
            if raw is None:
                return handler(view, request, *args, **kwargs)
            key = f"{scope}:{request.user.id}:{hashlib.sha256(_clean_key(raw).encode()).hexdigest()}"
            fingerprint = _fingerprint(request)
            with transaction.atomic():
                locked = _try_lock(key)
                record = IdempotencyKey.objects.filter(key=key).first()
                now = timezone.now()
                if not locked:  # another transaction runs this key now; answer from what is committed
                    return _replay(record if record is not None and record.expires_at > now else None, fingerprint)
                if record is not None and record.expires_at <= now:
                    record.delete()  # expired and not yet pruned: the key is free again
                    record = None
                if record is not None:
                    return _replay(record, fingerprint)
                IdempotencyKey.objects.create(
                    key=key, fingerprint=fingerprint, created_at=now, expires_at=now + timedelta(seconds=TTL_SECONDS)
                )
                response = handler(view, request, *args, **kwargs)  # an exception rolls everything back
                if response.status_code >= 500:
                    transaction.set_rollback(True)  # not applied: the retry runs again
                    return response
                IdempotencyKey.objects.filter(key=key).update(status=response.status_code, body=response.data)
            return response

        return wrapper

    return decorate


def _replay(record, fingerprint: str) -> Response:
    if record is None:  # the first request has not committed yet
        raise Problem(409, "idempotency-key-in-progress", "A request with this Idempotency-Key is in progress.")
    if record.fingerprint != fingerprint:
        raise Problem(422, "idempotency-key-reused", "This Idempotency-Key was used with a different request body.")
    if record.status is None:  # our own claim, seen by a request nested in the same transaction
        raise Problem(409, "idempotency-key-in-progress", "A request with this Idempotency-Key is in progress.")
    status = record.status
    response = Response(record.body, status=status, content_type=CONTENT_TYPE if status >= 400 else None)
    response["Idempotent-Replayed"] = "true"
    return response


def prune_idempotency_keys(*, now=None) -> int:
    """Delete expired keys in batches (never one huge DELETE holding locks); returns how many."""
    from shared.platform.models import IdempotencyKey

    table = IdempotencyKey._meta.db_table
    now = now or timezone.now()
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table} WHERE expires_at < %s LIMIT {PRUNE_BATCH})", [now]
            )
            total += cursor.rowcount
            if cursor.rowcount < PRUNE_BATCH:
                return total
