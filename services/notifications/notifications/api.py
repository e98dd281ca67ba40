from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications import selectors, services
from notifications.actors import actor_profiles
from notifications.unread import unread_count
from shared.fields import IdField, StrictBooleanField
from shared.idempotency import idempotent
from shared.openapi import BODY, CURSOR_PARAMETERS, ID_PATTERN, IDEMPOTENCY_KEY, page_of, problems
from shared.pagination import page_request, page_response


class ActorSerializer(serializers.Serializer):
    id = IdField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    avatar_url = serializers.CharField()


class NotificationSerializer(serializers.Serializer):
    id = IdField()
    kind = serializers.ChoiceField(choices=["follow", "like", "mention"])
    actor = ActorSerializer()
    actor_count = serializers.IntegerField(
        min_value=1,
        help_text=(
            "How many people this notification stands for: likes of one post are grouped while unread "
            '(`actor` is the latest of them: "alice and 3 others liked your post" has actor_count 4).'
        ),
    )
    post_id = IdField(allow_null=True)
    created_at = serializers.DateTimeField()
    read = serializers.BooleanField()


class NotificationListApi(APIView):
    OutputSerializer = NotificationSerializer

    @extend_schema(
        operation_id="notifications_list",
        tags=["notifications"],
        parameters=[
            OpenApiParameter(
                "unread",
                {"type": "string", "enum": ["true", "false"]},
                OpenApiParameter.QUERY,
                description="`true`: only unread notifications.",
            ),
            *CURSOR_PARAMETERS,
        ],
        responses={200: page_of(NotificationSerializer), **problems(400, 401)},
    )
    def get(self, request):
        raw_unread = request.query_params.get("unread")
        if raw_unread not in (None, "true", "false"):
            raise ValidationError({"unread": ["Must be true or false."]})
        unread_only = raw_unread == "true"
        salt = f"notifications:{request.user.id}:{int(unread_only)}"
        page = page_request(request.query_params, salt=salt)
        rows = selectors.notifications_page(
            recipient_id=request.user.id, unread_only=unread_only, before_id=page.position, limit=page.limit
        )

        def serialize(items):
            actors = actor_profiles(ids=[r["actor_id"] for r in items])  # one batch call for the page
            return self.OutputSerializer(
                [
                    {
                        "id": r["id"],
                        "kind": r["kind"],
                        "actor": actors[r["actor_id"]].public(),
                        "actor_count": r["actor_count"],
                        "post_id": None if r["post_id"] is None else str(r["post_id"]),
                        "created_at": r["created_at"],
                        "read": r["read_at"] is not None,
                    }
                    for r in items
                ],
                many=True,
            ).data

        return Response(page_response(rows, page, salt=salt, key=lambda r: r["id"], serialize=serialize))


class UnreadCountApi(APIView):
    @extend_schema(
        operation_id="notifications_unread_count",
        tags=["notifications"],
        responses={
            200: inline_serializer("UnreadCount", fields={"count": serializers.IntegerField(min_value=0)}),
            **problems(401),
        },
    )
    def get(self, request):
        return Response({"count": unread_count(user_id=request.user.id)})


# either ids or all: true, nothing else: a oneOf the serializer below cannot express by itself
MARK_READ_BODY = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["ids"],
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {"type": "string", "pattern": ID_PATTERN},
                    "description": "Ids of the caller's notifications to mark read (others' ids are ignored).",
                }
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["all"],
            "properties": {"all": {"type": "boolean", "enum": [True], "description": "Mark every notification read."}},
        },
    ]
}


class MarkReadApi(APIView):
    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(child=IdField(), min_length=1, max_length=1000, required=False)
        all = StrictBooleanField(required=False, help_text="Only `true`: mark every notification read.")

        class Meta:
            ref_name = "MarkRead"

        def validate(self, attrs):
            unknown = sorted(set(self.initial_data) - {"ids", "all"}) if isinstance(self.initial_data, dict) else []
            if unknown:
                raise ValidationError({name: ["Unknown field."] for name in unknown})
            if ("ids" in attrs) == ("all" in attrs):
                raise ValidationError({"non_field_errors": ["Give either ids or all: true."]})
            if "all" in attrs and attrs["all"] is not True:
                raise ValidationError({"all": ["Only true is accepted."]})
            return attrs

    @extend_schema(
        operation_id="notifications_mark_read",
        tags=["notifications"],
        request={"application/json": MARK_READ_BODY},
        parameters=[IDEMPOTENCY_KEY],
        responses={204: None, **problems(*BODY, 401, 409, 422)},
        description="Give either `ids` (up to 1,000 of the caller's notifications) or `all: true`.",
    )
    @idempotent(scope="notifications.read")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.notifications_mark_read(
            recipient_id=request.user.id, ids=data.validated_data.get("ids"), mark_all=bool(data.validated_data.get("all"))
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
