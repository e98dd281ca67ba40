"""Typed client for the users service's internal API (used by feed and notifications)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from shared.auth import ServiceCredential
from shared.http import ServiceClient

BATCH = 100  # the internal endpoint's limit per call


class UserSummary(TypedDict):
    id: str
    username: str
    display_name: str
    avatar_url: str


class UsersClient(ServiceClient):
    def __init__(self, base_url: str, *, service_name: str, **kw):
        super().__init__(base_url, service_name=service_name, target="users",
                         credential=ServiceCredential(caller=service_name, target="users"), **kw)

    def summaries(self, ids: Iterable[int]) -> dict[int, UserSummary]:
        """Profiles of the users that exist, by id (missing ids are deleted users)."""
        wanted = sorted(set(ids))
        found: dict[int, UserSummary] = {}
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start:start + BATCH]
            body = self.get_json("/internal/v1/users", params={"ids": ",".join(map(str, chunk))})
            for row in body["results"]:
                found[int(row["id"])] = UserSummary(id=str(row["id"]), username=row["username"],
                                                    display_name=row["display_name"], avatar_url=row["avatar_url"])
        return found
