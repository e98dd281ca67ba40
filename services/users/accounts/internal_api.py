from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts import selectors
from accounts.api import ProfileSummarySerializer
from shared.internal import InternalApiView, parse_id_list
from shared.openapi import problems
from shared.users_api import MAX_IDS_PER_CALL, USERNAME_PATTERN, is_username

_NAME = USERNAME_PATTERN.strip("^$")
USERNAMES_PATTERN = f"^{_NAME}(,{_NAME}){{0,{MAX_IDS_PER_CALL - 1}}}$"

SUMMARIES = inline_serializer("ProfileSummaryList", fields={"results": ProfileSummarySerializer(many=True)})


class UsersBatchApi(InternalApiView):
    """GET /internal/v1/users?ids=1,2,3 → the profiles that exist, in one query."""

    allowed_callers = frozenset({"feed", "notifications"})

    @extend_schema(
        operation_id="internal_users_batch",
        tags=["internal"],
        parameters=[
            OpenApiParameter(
                "ids",
                {"type": "string", "pattern": r"^[0-9]{1,19}(,[0-9]{1,19}){0,99}$"},
                OpenApiParameter.QUERY,
                required=True,
                description="1 to 100 comma-separated user ids.",
            )
        ],
        responses={200: SUMMARIES, **problems(400, 401, 403)},
    )
    def get(self, request):
        ids = parse_id_list(request.query_params.get("ids"))
        rows = selectors.summaries_by_ids(ids=ids)
        return Response({"results": ProfileSummarySerializer(rows, many=True).data})


class UsersByUsernameApi(InternalApiView):
    """GET /internal/v1/users/by-username?usernames=a,b → profiles of the names that exist (mentions)."""

    allowed_callers = frozenset({"feed"})

    @extend_schema(
        operation_id="internal_users_by_username",
        tags=["internal"],
        parameters=[
            OpenApiParameter(
                "usernames",
                {"type": "string", "pattern": USERNAMES_PATTERN},
                OpenApiParameter.QUERY,
                required=True,
                description="1 to 100 comma-separated usernames.",
            )
        ],
        responses={200: SUMMARIES, **problems(400, 401, 403)},
    )
    def get(self, request):
        names = [n for n in (request.query_params.get("usernames") or "").split(",") if n]
        if not names or len(names) > MAX_IDS_PER_CALL or not all(is_username(n) for n in names):
            raise ValidationError({"usernames": ["Give 1 to 100 comma-separated usernames."]})
        rows = selectors.summaries_by_usernames(usernames=names)
        return Response({"results": ProfileSummarySerializer(rows, many=True).data})
