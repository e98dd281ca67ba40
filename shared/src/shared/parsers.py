"""The JSON request parser every service uses (DRF's DEFAULT_PARSER_CLASSES).

DRF's JSONParser lets the decoder's `RecursionError` escape on deeply nested input (`"["*1000`),
which Django answers with a 500. This parser answers any undecodable or too deeply nested body
with `ParseError` (400 `malformed-request` problem), before a view or a throttle sees the data.
Nesting is bounded at MAX_DEPTH (no request of the API nests more than a few levels), checked
iteratively, so later code that walks the data (serializers, logging) cannot recurse deeply either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DRFJSONParser

MAX_DEPTH = 32


def nesting_depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when `value` (decoded JSON) nests lists/objects more than `limit` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        children: Iterable[Any] = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class JSONParser(DRFJSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested more than {MAX_DEPTH} levels deep.") from None
        if nesting_depth_exceeds(data):
            raise ParseError(f"JSON parse error - nested more than {MAX_DEPTH} levels deep.")
        return data
