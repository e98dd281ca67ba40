"""Data types of users' internal API. Ids are ints inside the services (database keys); the JSON of
the internal API may carry them as numbers or decimal strings, and the public API renders them as
strings (docs/api.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class UserSummary:
    """A user's public profile summary: what a post's author or a notification's actor shows."""

    id: int
    username: str
    display_name: str
    avatar_url: str

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> UserSummary:
        return cls(id=int(row["id"]), username=row["username"], display_name=row["display_name"], avatar_url=row["avatar_url"])

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (cache values: no class has to be importable to read them back)."""
        return asdict(self)

    def public(self) -> dict[str, str]:
        """As the public API renders it: the id as a decimal string."""
        return {"id": str(self.id), "username": self.username, "display_name": self.display_name, "avatar_url": self.avatar_url}


@dataclass(frozen=True)
class FollowerIdsPage:
    ids: list[int]
    next_after: int | None
