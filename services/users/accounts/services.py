"""Writes for accounts: registration, login, token issue/refresh/revoke, profile updates."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts import selectors
from accounts.keys import active_key
from accounts.models import RefreshToken, User
from shared import revocation
from shared.errors import CredentialsRejected, InvalidInput, NotAllowed, NotFound
from shared.events import publish
from shared.text import skeleton
from shared.tokens import ALGORITHM, TOKEN_TYPE

logger = logging.getLogger(__name__)

# Checked against when the account does not exist, so "no such user" costs the same Argon2 time
# as "wrong password" and the two answers cannot be told apart by timing either.
_DUMMY_HASH = make_password("not-a-real-password-" + secrets.token_hex(8))
INVALID_CREDENTIALS = "Invalid username/email or password."


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str
    expires_in: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def access_token_issue(*, user: User, sid: uuid.UUID | None = None) -> str:
    """An access token; `sid` names its login session (the refresh family) for session revocation."""
    key = active_key()
    now = int(timezone.now().timestamp())
    claims = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": str(user.id),
        "username": user.username,
        "iat": now,
        "exp": now + settings.ACCESS_TOKEN_TTL,
        "jti": uuid.uuid4().hex,
    }
    if sid is not None:
        claims["sid"] = str(sid)
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TOKEN_TYPE})


def _refresh_token_create(*, user_id: int, family: uuid.UUID) -> str:
    token = secrets.token_urlsafe(32)
    RefreshToken.objects.create(
        user_id=user_id,
        family=family,
        token_hash=_hash(token),
        expires_at=timezone.now() + timedelta(seconds=settings.REFRESH_TOKEN_TTL),
    )
    return token


def token_pair_issue(*, user: User, family: uuid.UUID | None = None) -> TokenPair:
    family = family or uuid.uuid4()
    return TokenPair(
        access=access_token_issue(user=user, sid=family),
        refresh=_refresh_token_create(user_id=user.id, family=family),
        expires_in=settings.ACCESS_TOKEN_TTL,
    )


def _display_name_check(*, display_name: str, own_username: str) -> None:
    """A display name may not read as another user's username (compared NFKC-casefolded, so
    full-width or differently-cased letters do not get around it)."""
    seen_as = skeleton(display_name.strip()).lstrip("@")
    if not seen_as or seen_as == own_username.lower():
        return
    if selectors.user_by_username(username=seen_as) is not None:
        raise InvalidInput({"display_name": ["This is another user's username."]})


@transaction.atomic
def user_register(*, username: str, email: str, password: str, display_name: str = "") -> tuple[User, TokenPair]:
    user = User(username=username, email=email.strip(), display_name=display_name or username)
    if selectors.user_by_username(username=username) is not None:
        raise InvalidInput({"username": ["This username is taken."]})
    _display_name_check(display_name=user.display_name, own_username=username)
    if selectors.user_by_email(email=user.email) is not None:
        raise InvalidInput({"email": ["An account with this email exists."]})
    try:
        validate_password(password, user=user)  # type: ignore[arg-type]  # the validators read attributes only
    except DjangoValidationError as exc:
        raise InvalidInput({"password": list(exc.messages)}) from None
    user.password = make_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # lost a race with a concurrent registration of the same name/email
        raise InvalidInput({"username": ["This username or email is taken."]}) from None
    publish("user.registered", {"user_id": str(user.id), "username": user.username})
    return user, token_pair_issue(user=user)


@transaction.atomic
def user_login(*, login: str, password: str) -> tuple[User, TokenPair]:
    user = selectors.user_by_login(login=login)
    if user is None:
        check_password(password, _DUMMY_HASH)
        raise CredentialsRejected(INVALID_CREDENTIALS)

    def rehash(raw: str) -> None:
        User.objects.filter(id=user.id).update(password=make_password(raw))

    if not check_password(password, user.password, setter=rehash):
        raise CredentialsRejected(INVALID_CREDENTIALS)
    return user, token_pair_issue(user=user)


def _family_revoke(family: uuid.UUID) -> None:
    """Revoke a login session: its refresh tokens, and (after commit) its access tokens."""
    RefreshToken.objects.filter(family=family, revoked_at__isnull=True).update(revoked_at=timezone.now())
    transaction.on_commit(lambda: revocation.revoke_session(str(family)))


def token_refresh(*, refresh: str) -> TokenPair:
    """Spend a refresh token for a new pair. Reuse of a spent token revokes its family: the
    legitimate holder and the thief both lose it, and the user logs in again."""
    reused = False
    with transaction.atomic():
        row = RefreshToken.objects.select_for_update().select_related("user").filter(token_hash=_hash(refresh)).first()
        if row is None or row.revoked_at is not None or row.expires_at <= timezone.now():
            raise CredentialsRejected("Invalid refresh token.")
        if row.used_at is not None:
            _family_revoke(row.family)
            reused = True
        else:
            row.used_at = timezone.now()
            row.save(update_fields=["used_at"])
            pair = token_pair_issue(user=row.user, family=row.family)
    if reused:  # raised after commit so the revocation stays
        raise CredentialsRejected("Refresh token reuse detected; all sessions of this login are revoked.")
    return pair


@transaction.atomic
def token_revoke(*, user_id: int, refresh: str) -> None:
    """Logout: revoke the family of a refresh token the caller owns (others' tokens are left alone)."""
    row = RefreshToken.objects.filter(token_hash=_hash(refresh), user_id=user_id).only("family").first()
    if row is not None:
        _family_revoke(row.family)


@transaction.atomic
def user_update(*, user_id: int, **fields) -> User:
    user = User.objects.select_for_update().filter(id=user_id).first()
    if user is None:
        raise NotFound("This account no longer exists.")
    if fields.get("display_name"):
        _display_name_check(display_name=fields["display_name"], own_username=user.username)
    for name, value in fields.items():
        setattr(user, name, value)
    user.updated_at = timezone.now()
    user.save(update_fields=[*fields, "updated_at"])
    if set(fields) & PUBLIC_SUMMARY_FIELDS:  # what other services show of a user (bio is not)
        publish(
            "user.updated",
            {
                "user_id": str(user.id),
                "username": user.username,
                "display_name": user.display_name,
                "avatar_url": user.avatar_url,
            },
        )
    profiles_forget_on_commit(user.username)
    return user


PUBLIC_SUMMARY_FIELDS = {"username", "display_name", "avatar_url"}


def profiles_forget_on_commit(*usernames: str) -> None:
    """Drop cached profiles after commit. A cache outage must not turn a committed write into a
    500: the entries expire by themselves (PROFILE_CACHE_SECONDS)."""

    def forget() -> None:
        try:
            selectors.profile_cache_forget(*usernames)
        except Exception as exc:
            logger.warning("profile cache invalidation failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    transaction.on_commit(forget)


@transaction.atomic
def user_delete(*, user_id: int, password: str) -> None:
    """Delete an account once its password is given again (a stolen access token alone cannot
    delete it): its follow edges (and the counters they moved), its refresh tokens, and a
    `user.deleted` event so other services remove what belongs to it. A wrong password writes nothing."""
    from follows.models import Follow  # the follow graph lives in this service; accounts owns the user

    user = User.objects.select_for_update().filter(id=user_id).first()
    if user is None:
        raise NotFound("This account no longer exists.")
    if not check_password(password, user.password):
        raise NotAllowed(
            "The password is not correct; the account was not deleted.", code="wrong-password", title="Wrong password"
        )
    followees = Follow.objects.filter(follower_id=user_id).values("followee_id")
    followers = Follow.objects.filter(followee_id=user_id).values("follower_id")
    names = list(User.objects.filter(Q(id__in=followees) | Q(id__in=followers)).values_list("username", flat=True))
    # Set-based updates through subqueries, not one per neighbour: an account may have millions of followers.
    User.objects.filter(id__in=followees).update(followers_count=F("followers_count") - 1)
    User.objects.filter(id__in=followers).update(following_count=F("following_count") - 1)
    Follow.objects.filter(Q(follower_id=user_id) | Q(followee_id=user_id)).delete()
    RefreshToken.objects.filter(user_id=user_id).delete()
    user.delete()
    publish("user.deleted", {"user_id": str(user_id)})
    transaction.on_commit(lambda: revocation.revoke_user(user_id))  # consumers of user.deleted write it too
    profiles_forget_on_commit(user.username, *names)
