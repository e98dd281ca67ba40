from accounts import selectors as account_selectors
from accounts.api import ProfileSummarySerializer, PublicProfileSerializer
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from follows import selectors, services
from shared.idempotency import idempotent
from shared.pagination import page_request, page_response
from shared.problems import Problem


def _user_or_404(username: str) -> dict:
    profile = account_selectors.profile_by_username(username=username)
    if profile is None:
        raise Problem(404, "not-found", f"No user named {username!r}.", title="Not found")
    return profile


class UserDetailApi(APIView):
    def get(self, request, username: str):
        profile = _user_or_404(username)
        body = PublicProfileSerializer(profile).data
        body["is_following"] = (profile["id"] != request.user.id and
                                selectors.is_following(follower_id=request.user.id, followee_id=profile["id"]))
        return Response(body)


class FollowApi(APIView):
    @idempotent(scope="users.follow")
    def post(self, request, username: str):
        created = services.follow_create(follower_id=request.user.id, followee_username=username)
        return Response({"following": True}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @idempotent(scope="users.unfollow")
    def delete(self, request, username: str):
        services.follow_delete(follower_id=request.user.id, followee_username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _profile_list(request, username: str, *, selector, prefix: str, salt: str) -> Response:
    page = page_request(request.query_params, salt=salt)
    if page.position is not None and not isinstance(page.position, int):
        raise Problem(400, "validation-error", "Invalid cursor.", errors={"cursor": ["Invalid cursor."]})
    user = _user_or_404(username)
    rows = selector(user_id=user["id"], before_id=page.position, limit=page.limit)

    def serialize(batch):
        profiles = [{field: row[f"{prefix}__{field}"] for field in ("id", "username", "display_name", "avatar_url")}
                    for row in batch]
        return ProfileSummarySerializer(profiles, many=True).data

    return Response(page_response(rows, page, salt=salt, key=lambda row: row["id"], serialize=serialize))


class FollowersApi(APIView):
    def get(self, request, username: str):
        return _profile_list(request, username, selector=selectors.followers_page, prefix="follower",
                             salt="followers")


class FollowingApi(APIView):
    def get(self, request, username: str):
        return _profile_list(request, username, selector=selectors.following_page, prefix="followee",
                             salt="following")
