from accounts import selectors as account_selectors
from accounts.api import ProfileSummarySerializer, PublicProfileSerializer
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from follows import selectors, services
from shared.idempotency import idempotent
from shared.openapi import CURSOR_PARAMETERS, IDEMPOTENCY_KEY, USERNAME_PATH, page_of, problems
from shared.pagination import page_request, page_response
from shared.problems import Problem
from shared.users_api import is_username


def _no_such_user(username: str) -> Problem:
    return Problem(404, "not-found", f"No user named {username!r}.", title="Not found")


def _valid_name(username: str) -> str:
    """A path segment that cannot be a username names no user: 404 before any cache key or query is
    built from it (a NUL byte is refused by Postgres; spaces and 250+ bytes by cache-key validation)."""
    if not is_username(username):
        raise _no_such_user(username)
    return username


def _user_or_404(username: str) -> dict:
    profile = account_selectors.profile_by_username(username=_valid_name(username))
    if profile is None:
        raise _no_such_user(username)
    return profile


class UserProfileSerializer(PublicProfileSerializer):
    is_following = serializers.BooleanField(help_text="Whether the caller follows this user.")


FOLLOW_RESULT = inline_serializer("FollowResult", fields={"following": serializers.BooleanField()})


class UserDetailApi(APIView):
    @extend_schema(
        operation_id="users_get",
        tags=["users"],
        parameters=[USERNAME_PATH],
        responses={200: UserProfileSerializer, **problems(401, 404)},
    )
    def get(self, request, username: str):
        profile = _user_or_404(username)
        body = PublicProfileSerializer(profile).data
        body["is_following"] = profile["id"] != request.user.id and selectors.is_following(
            follower_id=request.user.id, followee_id=profile["id"]
        )
        return Response(body)


class FollowApi(APIView):
    @extend_schema(
        operation_id="users_follow",
        tags=["follows"],
        request=None,
        parameters=[USERNAME_PATH, IDEMPOTENCY_KEY],
        responses={201: FOLLOW_RESULT, 200: FOLLOW_RESULT, **problems(400, 401, 404, 409, 422)},
        description="Idempotent: 201 when the follow is new, 200 when it already existed.",
    )
    @idempotent(scope="users.follow")
    def post(self, request, username: str):
        created = services.follow_create(follower_id=request.user.id, followee_username=_valid_name(username))
        return Response({"following": True}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="users_unfollow",
        tags=["follows"],
        parameters=[USERNAME_PATH, IDEMPOTENCY_KEY],
        responses={204: None, **problems(400, 401, 404, 409, 422)},
    )
    @idempotent(scope="users.unfollow")
    def delete(self, request, username: str):
        services.follow_delete(follower_id=request.user.id, followee_username=_valid_name(username))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _profile_list(request, username: str, *, selector, prefix: str, salt: str) -> Response:
    page = page_request(request.query_params, salt=salt)
    if page.position is not None and not isinstance(page.position, int):
        raise Problem(400, "validation-error", "Invalid cursor.", errors={"cursor": ["Invalid cursor."]})
    user = _user_or_404(username)
    rows = selector(user_id=user["id"], before_id=page.position, limit=page.limit)

    def serialize(batch):
        profiles = [
            {field: row[f"{prefix}__{field}"] for field in ("id", "username", "display_name", "avatar_url")} for row in batch
        ]
        return ProfileSummarySerializer(profiles, many=True).data

    return Response(page_response(rows, page, salt=salt, key=lambda row: row["id"], serialize=serialize))


class FollowersApi(APIView):
    @extend_schema(
        operation_id="users_followers",
        tags=["follows"],
        parameters=[USERNAME_PATH, *CURSOR_PARAMETERS],
        responses={200: page_of(ProfileSummarySerializer), **problems(400, 401, 404)},
    )
    def get(self, request, username: str):
        return _profile_list(request, username, selector=selectors.followers_page, prefix="follower", salt="followers")


class FollowingApi(APIView):
    @extend_schema(
        operation_id="users_following",
        tags=["follows"],
        parameters=[USERNAME_PATH, *CURSOR_PARAMETERS],
        responses={200: page_of(ProfileSummarySerializer), **problems(400, 401, 404)},
    )
    def get(self, request, username: str):
        return _profile_list(request, username, selector=selectors.following_page, prefix="followee", salt="following")
