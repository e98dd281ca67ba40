"""Reads for accounts. Lookups by name go through the Lower(...) functional unique indexes."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from django.db.models.functions import Lower

from accounts.models import User

SUMMARY_FIELDS = ("id", "username", "display_name", "avatar_url")
PROFILE_FIELDS = (*SUMMARY_FIELDS, "bio", "followers_count", "following_count", "created_at")


def user_by_username(*, username: str) -> User | None:
    return User.objects.alias(username_ci=Lower("username")).filter(username_ci=username.lower()).first()


def user_by_email(*, email: str) -> User | None:
    return User.objects.alias(email_ci=Lower("email")).filter(email_ci=email.lower()).first()


def user_by_login(*, login: str) -> User | None:
    """Login accepts a username or an email, case-insensitively."""
    return user_by_email(email=login) if "@" in login else user_by_username(username=login)


def user_id_by_login(*, login: str) -> int | None:
    """The id of the account a login name (username or email, any case) resolves to."""
    users = User.objects.alias(email_ci=Lower("email")) if "@" in login else User.objects.alias(username_ci=Lower("username"))
    lookup = {"email_ci": login.lower()} if "@" in login else {"username_ci": login.lower()}
    return users.filter(**lookup).values_list("id", flat=True).first()


def _profile_key(username: str) -> str:
    return f"profile:v1:{username.lower()}"


def profile_by_username(*, username: str) -> dict | None:
    """A public profile (without viewer-specific fields), read through the Redis cache."""
    key = _profile_key(username)
    profile = cache.get(key)
    if profile is None:
        profile = (
            User.objects.alias(username_ci=Lower("username")).filter(username_ci=username.lower()).values(*PROFILE_FIELDS).first()
        )
        if profile is None:
            return None
        cache.set(key, profile, settings.PROFILE_CACHE_SECONDS)
    return profile


def profile_cache_forget(*usernames: str) -> None:
    cache.delete_many([_profile_key(u) for u in usernames])


def summaries_by_ids(*, ids: Iterable[int]) -> list[dict]:
    return list(User.objects.filter(id__in=list(ids)).values(*SUMMARY_FIELDS).order_by("id"))


def summaries_by_usernames(*, usernames: Iterable[str]) -> list[dict]:
    lowered = sorted({u.lower() for u in usernames})
    return list(
        User.objects.alias(username_ci=Lower("username")).filter(username_ci__in=lowered).values(*SUMMARY_FIELDS).order_by("id")
    )


def user_by_id(*, user_id: int) -> User | None:
    return User.objects.filter(id=user_id).first()
