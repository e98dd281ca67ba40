from accounts.models import User
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from follows import selectors
from shared.fields import IdField
from shared.internal import InternalApiView
from shared.openapi import problems

MAX_PAGE = 5000


class FollowerIdsApi(InternalApiView):
    """GET /internal/v1/users/{id}/follower-ids?after=&limit= → {"ids": [...], "next_after": id | null}.
    Keyset over follower_id so a fan-out can walk millions of followers page by page."""

    allowed_callers = frozenset({"feed"})

    @extend_schema(
        operation_id="internal_follower_ids",
        tags=["internal"],
        parameters=[
            OpenApiParameter("user_id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH),
            OpenApiParameter("after", {"type": "string", "pattern": r"^[0-9]{1,19}$"}, OpenApiParameter.QUERY),
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1000}, OpenApiParameter.QUERY
            ),
        ],
        responses={
            200: inline_serializer(
                "FollowerIds", fields={"ids": serializers.ListField(child=IdField()), "next_after": IdField(allow_null=True)}
            ),
            **problems(400, 401, 403, 404),
        },
    )
    def get(self, request, user_id: int):
        try:
            limit = int(request.query_params.get("limit", 1000))
            after = request.query_params.get("after")
            after_id = int(after) if after else None
        except ValueError:
            raise ValidationError({"after": ["Must be a number."], "limit": ["Must be a number."]}) from None
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError({"limit": [f"Must be between 1 and {MAX_PAGE}."]})
        if not User.objects.filter(id=user_id).exists():
            raise NotFound("No such user.")
        ids = selectors.follower_ids_page(user_id=user_id, after_id=after_id, limit=limit)
        more = len(ids) > limit
        ids = ids[:limit]
        return Response({"ids": [str(i) for i in ids], "next_after": str(ids[-1]) if more else None})
