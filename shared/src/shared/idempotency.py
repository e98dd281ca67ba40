"""`Idempotency-Key` for writes: a replay returns the first response.

    class PostCreateApi(APIView):
        @idempotent(scope="posts.create")
        def post(self, request): ...

Keys are scoped per user (and per operation), so two users' keys never collide. The first
request claims the key in Redis (`SET NX`) with a fingerprint of its method, path and body and
the state `running`; when it finishes, its response (status and body; 2xx and 4xx, not 5xx) is
stored for 24 h. Another request with the key then gets:
- the stored response, with `Idempotent-Replayed: true`, when the fingerprint matches;
- 422 `idempotency-key-reused` when the body (or path) differs;
- 409 `idempotency-key-in-progress` while the first is still running.
A 5xx or an exception releases the key so the client can retry. A `running` claim expires
after RUNNING_TTL, so a crashed worker cannot lock a key for a day.

Limit, on purpose: the response is stored after the database commit, in Redis, not in the same
transaction. A process killed between the two leaves the key `running` until RUNNING_TTL, after
which a retry is executed again. Keeping the record in each service's own database would close
that window but put a table into every service; see docs/feed.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging

import redis
from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from shared.problems import CONTENT_TYPE, Problem

HEADER = "Idempotency-Key"
TTL_SECONDS = 24 * 3600
RUNNING_TTL = 60
MAX_KEY_LENGTH = 255
log = logging.getLogger("shared.idempotency")
_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return client


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


def idempotent(*, scope: str):
    """Decorate an APIView handler so requests with an Idempotency-Key are applied at most once."""

    def decorate(handler):
        @functools.wraps(handler)
        def wrapper(view, request, *args, **kwargs):
            raw = request.headers.get(HEADER)
            if raw is None:
                return handler(view, request, *args, **kwargs)
            key = f"idem:{scope}:{request.user.id}:{hashlib.sha256(_clean_key(raw).encode()).hexdigest()}"
            fingerprint = _fingerprint(request)
            client = _redis()
            claim = json.dumps({"state": "running", "fingerprint": fingerprint})
            if not client.set(key, claim, nx=True, ex=RUNNING_TTL):
                return _replay(client.get(key), fingerprint)
            try:
                response = handler(view, request, *args, **kwargs)
            except BaseException:
                client.delete(key)
                raise
            if response.status_code >= 500:
                client.delete(key)
                return response
            record = {"state": "done", "fingerprint": fingerprint, "status": response.status_code,
                      "body": response.data}
            client.set(key, json.dumps(record), ex=TTL_SECONDS)
            return response

        return wrapper

    return decorate


def _replay(stored: bytes | None, fingerprint: str) -> Response:
    if stored is None:  # expired between our SET NX and GET: treat as still running, client retries
        raise Problem(409, "idempotency-key-in-progress", "A request with this Idempotency-Key is in progress.")
    record = json.loads(stored)
    if record["fingerprint"] != fingerprint:
        raise Problem(422, "idempotency-key-reused",
                      "This Idempotency-Key was used with a different request body.")
    if record["state"] != "done":
        raise Problem(409, "idempotency-key-in-progress", "A request with this Idempotency-Key is in progress.")
    status = record["status"]
    response = Response(record["body"], status=status, content_type=CONTENT_TYPE if status >= 400 else None)
    response["Idempotent-Replayed"] = "true"
    return response
