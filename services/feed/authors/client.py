"""feed's one client of users' internal API (the client and its types are users': shared.users_api)."""

from __future__ import annotations

import threading

from django.conf import settings

from shared.users_api import FollowerIdsPage, UsersClient, UserSummary

__all__ = ["FollowerIdsPage", "UserSummary", "UsersClient", "users_client", "users_client_reset"]

_client: UsersClient | None = None
_lock = threading.Lock()


def users_client() -> UsersClient:
    """The process's one client (one connection pool, one circuit breaker) for the users service."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = UsersClient(
                    settings.USERS_URL, caller="feed", read_timeout=settings.USERS_TIMEOUT, deadline=settings.USERS_DEADLINE
                )
    return _client


def users_client_reset() -> None:
    """Forget the client (settings changed: tests pointing feed at another users process)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
