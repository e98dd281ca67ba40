from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications import selectors, services
from notifications.actors import actor_profiles
from notifications.unread import unread_count
from shared.fields import IdField, StrictBooleanField
from shared.pagination import page_request, page_response


class ActorSerializer(serializers.Serializer):
    id = serializers.CharField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    avatar_url = serializers.CharField()


class NotificationListApi(APIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()
        kind = serializers.CharField()
        actor = ActorSerializer()
        post_id = serializers.CharField(allow_null=True)
        created_at = serializers.DateTimeField()
        read = serializers.BooleanField()

    def get(self, request):
        raw_unread = request.query_params.get("unread")
        if raw_unread not in (None, "true", "false"):
            raise ValidationError({"unread": ["Must be true or false."]})
        unread_only = raw_unread == "true"
        salt = f"notifications:{request.user.id}:{int(unread_only)}"
        page = page_request(request.query_params, salt=salt)
        rows = selectors.notifications_page(recipient_id=request.user.id, unread_only=unread_only,
                                            before_id=page.position, limit=page.limit)

        def serialize(items):
            actors = actor_profiles(ids=[r["actor_id"] for r in items])  # one batch call for the page
            return self.OutputSerializer([
                {"id": r["id"], "kind": r["kind"], "actor": actors[r["actor_id"]],
                 "post_id": None if r["post_id"] is None else str(r["post_id"]), "created_at": r["created_at"],
                 "read": r["read_at"] is not None} for r in items], many=True).data

        return Response(page_response(rows, page, salt=salt, key=lambda r: r["id"], serialize=serialize))


class UnreadCountApi(APIView):
    def get(self, request):
        return Response({"count": unread_count(user_id=request.user.id)})


class MarkReadApi(APIView):
    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(child=IdField(), min_length=1, max_length=1000, required=False)
        all = StrictBooleanField(required=False)

        def validate(self, attrs):
            unknown = sorted(set(self.initial_data) - {"ids", "all"}) if isinstance(self.initial_data, dict) else []
            if unknown:
                raise ValidationError({name: ["Unknown field."] for name in unknown})
            if ("ids" in attrs) == ("all" in attrs):
                raise ValidationError({"non_field_errors": ["Give either ids or all: true."]})
            if "all" in attrs and attrs["all"] is not True:
                raise ValidationError({"all": ["Only true is accepted."]})
            return attrs

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.notifications_mark_read(recipient_id=request.user.id, ids=data.validated_data.get("ids"),
                                         mark_all=bool(data.validated_data.get("all")))
        return Response(status=status.HTTP_204_NO_CONTENT)
