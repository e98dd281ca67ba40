"""The event catalogue: every domain event, its version, producer and fields (the producer's side).

Who consumes an event is not here: each consumer declares its handlers in its own code and
registers them (shared.events.subscriptions); what a consumer relies on is its contract
(contracts/messages/). `publish()` validates payloads against this catalogue, and
`python -m shared.events.catalogue` renders the table in docs/events.md (a test keeps the two identical).

Field kinds: "id" is a decimal string (64-bit ids overflow JavaScript numbers), "ids" a list of
them, "str" a string, "datetime" an ISO 8601 UTC string. Every field is required; adding an
optional field is a compatible change within a version, anything else is a new version.

CATALOGUE holds each type's newest version, the one `publish(type, data)` writes. A version that
is replaced but still consumed moves to PREVIOUS and stays publishable beside the new one
(`publish(type, old_data, version=N)` in the same transaction) until no consumer's contract names
it (docs/events.md#evolving-an-event). VERSIONS is both, by (type, version).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class EventType:
    type: str
    version: int
    producer: str
    fields: dict[str, str]
    description: str


class EventSchemaError(ValueError):
    """A payload does not match its event type's schema (a producer bug: never published)."""


def _event(type_: str, *, version: int = 1, producer: str, fields: dict[str, str], description: str) -> tuple[str, EventType]:
    return type_, EventType(type_, version, producer, fields, description)


CATALOGUE: dict[str, EventType] = dict(
    [
        _event(
            "user.registered", producer="users", fields={"user_id": "id", "username": "str"}, description="A new account exists."
        ),
        _event(
            "user.updated",
            producer="users",
            fields={"user_id": "id", "username": "str", "display_name": "str", "avatar_url": "str"},
            description="A profile's public fields changed; carries the new values (consumers refresh caches).",
        ),
        _event(
            "user.followed",
            producer="users",
            fields={"follower_id": "id", "followee_id": "id"},
            description="A new follow edge (not emitted for an idempotent repeat).",
        ),
        _event(
            "user.unfollowed",
            producer="users",
            fields={"follower_id": "id", "followee_id": "id"},
            description="A follow edge was removed.",
        ),
        _event(
            "user.deleted",
            producer="users",
            fields={"user_id": "id"},
            description="An account was deleted; consumers remove what belongs to it.",
        ),
        _event(
            "post.created",
            producer="feed",
            fields={"post_id": "id", "author_id": "id", "mentioned_user_ids": "ids", "created_at": "datetime"},
            description="A post was published; `mentioned_user_ids` are the existing users it mentions.",
        ),
        _event(
            "post.liked",
            producer="feed",
            fields={"post_id": "id", "author_id": "id", "liker_id": "id"},
            description="A new like (not emitted for an idempotent repeat).",
        ),
        _event(
            "post.deleted",
            producer="feed",
            fields={"post_id": "id", "author_id": "id"},
            description="A post was deleted; consumers drop what refers to it.",
        ),
    ]
)


def _is_id(value) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit() and 0 < len(value) <= 19


def _check(kind: str, value) -> bool:
    if kind == "id":
        return _is_id(value)
    if kind == "ids":
        return isinstance(value, list) and all(_is_id(v) for v in value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "datetime":
        if not isinstance(value, str):
            return False
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return False
        offset = parsed.utcoffset()
        return offset is not None and offset.total_seconds() == 0
    raise AssertionError(f"unknown field kind {kind}")


# Replaced versions still published beside the newest, while a consumer declares them. None today:
# every event is at its first version.
PREVIOUS: list[EventType] = []

VERSIONS: dict[tuple[str, int], EventType] = {(spec.type, spec.version): spec for spec in [*CATALOGUE.values(), *PREVIOUS]}


def event_type(type_: str, version: int | None = None) -> EventType:
    """The type's newest version, or the given one (newest or in PREVIOUS)."""
    try:
        return CATALOGUE[type_] if version is None else VERSIONS[(type_, version)]
    except KeyError:
        if version is not None and type_ in CATALOGUE:
            newest = CATALOGUE[type_].version
            raise EventSchemaError(f"{type_} v{version} is not published (newest: v{newest}; PREVIOUS has the rest)") from None
        raise EventSchemaError(f"unknown event type {type_!r}") from None


def validate_data(type_: str, data, version: int | None = None) -> EventType:
    spec = event_type(type_, version)
    if not isinstance(data, dict):
        raise EventSchemaError(f"{type_}: data must be an object")
    missing = sorted(set(spec.fields) - set(data))
    if missing:
        raise EventSchemaError(f"{type_}: missing fields {missing}")
    bad = sorted(name for name, kind in spec.fields.items() if not _check(kind, data[name]))
    if bad:
        raise EventSchemaError(f"{type_}: invalid fields {bad} (ids are decimal strings)")
    return spec


def render_markdown() -> str:
    lines = ["| event | version | producer | fields | meaning |", "|---|---|---|---|---|"]
    for spec in VERSIONS.values():
        fields = ", ".join(f"`{name}`: {kind}" for name, kind in spec.fields.items())
        lines.append(f"| `{spec.type}` | {spec.version} | {spec.producer} | {fields} | {spec.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
