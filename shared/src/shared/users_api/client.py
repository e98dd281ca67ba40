"""The client of users' internal API (`/internal/v1/...`): DTOs out, never JSON dicts or ORM rows.

Each consumer builds one per process (one connection pool, one circuit breaker) and names itself:
`UsersClient(settings.USERS_URL, caller="feed")`; the service credential says the same name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.auth import ServiceCredential
from shared.http import ServiceClient
from shared.users_api.types import FollowerIdsPage, UserSummary
from shared.users_api.validation import is_username

MAX_IDS_PER_CALL = 100  # the internal endpoints' limit per call (ids, usernames)


class UsersClient(ServiceClient):
    def __init__(self, base_url: str, *, caller: str, **kw: Any):
        kw.setdefault("credential", ServiceCredential(caller=caller, target="users"))
        super().__init__(base_url, service_name=caller, target="users", **kw)

    def summaries(self, ids: Iterable[int]) -> dict[int, UserSummary]:
        """Profiles of the ids that exist, by id, in batches of 100 (a missing id is a deleted user)."""
        found: dict[int, UserSummary] = {}
        unique = sorted(set(ids))
        for start in range(0, len(unique), MAX_IDS_PER_CALL):
            chunk = unique[start : start + MAX_IDS_PER_CALL]
            body = self.get_json("/internal/v1/users", params={"ids": ",".join(map(str, chunk))})
            found.update((s.id, s) for s in map(UserSummary.from_json, body["results"]))
        return found

    def summaries_by_username(self, usernames: list[str]) -> dict[str, UserSummary]:
        """Profiles of the names that exist, keyed by lower-cased username (≤100 names). A string that
        cannot be a username names nobody: it is not sent."""
        names = [n for n in usernames if is_username(n)][:MAX_IDS_PER_CALL]
        if not names:
            return {}
        body = self.get_json("/internal/v1/users/by-username", params={"usernames": ",".join(names)})
        return {s.username.lower(): s for s in map(UserSummary.from_json, body["results"])}

    def follower_ids(self, user_id: int, *, after: int | None, limit: int, deadline: float = 10.0) -> FollowerIdsPage:
        """One keyset page of the ids following user_id (fan-out runs in a worker: a longer deadline)."""
        params = {"limit": limit, **({"after": after} if after is not None else {})}
        body = self.get_json(f"/internal/v1/users/{user_id}/follower-ids", params=params, deadline=deadline)
        next_after = body["next_after"]
        return FollowerIdsPage(ids=[int(i) for i in body["ids"]], next_after=int(next_after) if next_after is not None else None)
