"""Writes for the follow graph. Counters move with F() in the same transaction as the edge,
rows updated in id order so two opposite follows cannot deadlock."""

from __future__ import annotations

from accounts import selectors as account_selectors
from accounts.models import User
from accounts.services import profiles_forget_on_commit
from django.db import IntegrityError, transaction
from django.db.models import F

from follows.models import Follow
from shared.errors import CredentialsRejected, NotFound, RuleViolated
from shared.events import publish


def _counts_shift(*, follower_id: int, followee_id: int, delta: int) -> None:
    updates = {
        follower_id: {"following_count": F("following_count") + delta},
        followee_id: {"followers_count": F("followers_count") + delta},
    }
    for user_id in sorted(updates):
        User.objects.filter(id=user_id).update(**updates[user_id])


def _followee(username: str) -> User:
    followee = account_selectors.user_by_username(username=username)
    if followee is None:
        raise NotFound(f"No user named {username!r}.")
    return followee


def _follower_lock(follower_id: int) -> None:
    """The caller's own row, locked against a concurrent deletion of the account. A token can
    outlive its account (revocation set unreachable): refuse cleanly instead of an IntegrityError."""
    if not User.objects.select_for_update(no_key=True).filter(id=follower_id).exists():
        raise CredentialsRejected("This account no longer exists.")


@transaction.atomic
def follow_create(*, follower_id: int, followee_username: str) -> bool:
    """Follow; True when a new edge was made, False when it already existed (idempotent)."""
    _follower_lock(follower_id)
    followee = _followee(followee_username)
    if followee.id == follower_id:
        raise RuleViolated("You cannot follow yourself.", code="cannot-follow-self", title="Cannot follow self")
    try:
        with transaction.atomic():
            Follow.objects.create(follower_id=follower_id, followee_id=followee.id)
    except IntegrityError:
        return False  # already following (possibly a concurrent duplicate that won the insert)
    _counts_shift(follower_id=follower_id, followee_id=followee.id, delta=1)
    _profiles_forget(follower_id, followee)
    publish("user.followed", {"follower_id": str(follower_id), "followee_id": str(followee.id)})
    return True


@transaction.atomic
def follow_delete(*, follower_id: int, followee_username: str) -> bool:
    _follower_lock(follower_id)
    followee = _followee(followee_username)
    deleted, _ = Follow.objects.filter(follower_id=follower_id, followee_id=followee.id).delete()
    if deleted:
        _counts_shift(follower_id=follower_id, followee_id=followee.id, delta=-1)
        _profiles_forget(follower_id, followee)
        publish("user.unfollowed", {"follower_id": str(follower_id), "followee_id": str(followee.id)})
    return bool(deleted)


def _profiles_forget(follower_id: int, followee: User) -> None:
    follower_name = User.objects.filter(id=follower_id).values_list("username", flat=True).first()
    names = [followee.username, *([follower_name] if follower_name else [])]
    profiles_forget_on_commit(*names)
