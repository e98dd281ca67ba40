"""Typed client for the users service's internal API (DTOs out, never JSON dicts or ORM rows)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from django.conf import settings

from shared.auth import ServiceCredential
from shared.http import ServiceClient

MAX_IDS_PER_CALL = 100


@dataclass(frozen=True)
class UserSummary:
    id: int
    username: str
    display_name: str
    avatar_url: str


@dataclass(frozen=True)
class FollowerIdsPage:
    ids: list[int]
    next_after: int | None


def _summary(row: dict) -> UserSummary:
    return UserSummary(id=int(row["id"]), username=row["username"], display_name=row["display_name"],
                       avatar_url=row["avatar_url"])


class UsersClient(ServiceClient):
    def summaries(self, ids: list[int]) -> dict[int, UserSummary]:
        """Profiles of the ids that exist, in batches of 100 (the internal API's limit)."""
        found: dict[int, UserSummary] = {}
        unique = sorted(set(ids))
        for start in range(0, len(unique), MAX_IDS_PER_CALL):
            chunk = unique[start:start + MAX_IDS_PER_CALL]
            body = self.get_json("/internal/v1/users", params={"ids": ",".join(map(str, chunk))})
            found.update((s.id, s) for s in map(_summary, body["results"]))
        return found

    def summaries_by_username(self, usernames: list[str]) -> dict[str, UserSummary]:
        """Profiles of the names that exist, keyed by lower-cased username (≤100 names)."""
        if not usernames:
            return {}
        body = self.get_json("/internal/v1/users/by-username", params={"usernames": ",".join(usernames)})
        return {s.username.lower(): s for s in map(_summary, body["results"])}

    def follower_ids(self, user_id: int, *, after: int | None, limit: int) -> FollowerIdsPage:
        params = {"limit": limit, **({"after": after} if after is not None else {})}
        # fan-out runs in a worker: it may wait longer than a request would
        body = self.get_json(f"/internal/v1/users/{user_id}/follower-ids", params=params, deadline=10.0)
        next_after = body["next_after"]
        return FollowerIdsPage(ids=[int(i) for i in body["ids"]],
                               next_after=int(next_after) if next_after is not None else None)


_client: UsersClient | None = None
_lock = threading.Lock()


def users_client() -> UsersClient:
    """The process's one client (one connection pool, one circuit breaker) for the users service."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = UsersClient(
                    settings.USERS_URL, service_name="feed", target="users",
                    read_timeout=settings.USERS_TIMEOUT, deadline=settings.USERS_DEADLINE,
                    credential=ServiceCredential(caller="feed", target="users"),
                )
    return _client


def users_client_reset() -> None:
    """Forget the client (settings changed: tests pointing feed at another users process)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
