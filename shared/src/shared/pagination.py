"""Cursor pagination: `?cursor=…&limit=…` → `{"results": [...], "next_cursor": "…" | null}`.

Cursors are opaque and tamper-evident: the keyset position (for example the last row's id)
signed with the service's SECRET_KEY and a per-list salt, so a cursor from one list cannot be
replayed against another and a forged one is a 400, not a query with attacker-chosen values.
Selectors fetch `limit + 1` rows after the position; the extra row only says there is more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core import signing
from rest_framework.exceptions import ValidationError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    position: Any | None
    limit: int


def encode_cursor(position: Any, *, salt: str) -> str:
    return signing.dumps(position, salt=f"cursor:{salt}", compress=False)


def decode_cursor(cursor: str, *, salt: str) -> Any:
    try:
        return signing.loads(cursor, salt=f"cursor:{salt}")
    except (signing.BadSignature, ValueError, TypeError):
        raise ValidationError({"cursor": ["Invalid cursor."]}) from None


def page_request(query_params, *, salt: str) -> PageRequest:
    """Parse and validate `cursor` and `limit` (1–100, default 20) from request.query_params."""
    raw_limit = query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ValidationError({"limit": ["A whole number is required."]}) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError({"limit": [f"Must be between 1 and {MAX_LIMIT}."]})
    raw_cursor = query_params.get("cursor")
    position = decode_cursor(raw_cursor, salt=salt) if raw_cursor else None
    return PageRequest(position=position, limit=limit)


def page_response(
    rows: Sequence[T], page: PageRequest, *, salt: str, key: Callable[[T], Any], serialize: Callable[[Sequence[T]], list]
) -> dict:
    """Build the response from up to `limit + 1` rows fetched after `page.position`."""
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    next_cursor = encode_cursor(key(rows[-1]), salt=salt) if has_more and rows else None
    return {"results": serialize(rows), "next_cursor": next_cursor}
