"""The users service's internal API, as users publishes it: the one client, the data types and the
validation rules (username, mentions) that feed and notifications use. users owns this package
(docs/decisions.md#one-owner-per-api-client-sharedusers_api): a change to it is a users change, reviewed by the users team,
and its wire behaviour is pinned by the Pact files in contracts/pacts/*-users.json."""

from shared.users_api.client import MAX_IDS_PER_CALL, UsersClient
from shared.users_api.types import FollowerIdsPage, UserSummary
from shared.users_api.validation import (
    MAX_MENTIONS,
    MENTION_RE,
    USERNAME_MAX_LENGTH,
    USERNAME_MIN_LENGTH,
    USERNAME_PATTERN,
    USERNAME_RE,
    is_username,
    mention_candidates,
)

__all__ = [
    "MAX_IDS_PER_CALL",
    "MAX_MENTIONS",
    "MENTION_RE",
    "USERNAME_MAX_LENGTH",
    "USERNAME_MIN_LENGTH",
    "USERNAME_PATTERN",
    "USERNAME_RE",
    "FollowerIdsPage",
    "UserSummary",
    "UsersClient",
    "is_username",
    "mention_candidates",
]
