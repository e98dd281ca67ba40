from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import services
from devices.models import Device
from shared.fields import IdField, StrictCharField
from shared.idempotency import idempotent
from shared.openapi import BODY, IDEMPOTENCY_KEY, path_parameter, problems
from shared.problems import Problem

TOKEN_PATTERN = r"^[A-Za-z0-9_:.\-]+$"
TOKEN = RegexValidator(TOKEN_PATTERN, "Letters, digits and _ : . - only.")


class DeviceCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        platform = serializers.ChoiceField(choices=Device.Platform.values)
        token = StrictCharField(min_length=1, max_length=4096, validators=[TOKEN])

        class Meta:
            ref_name = "DeviceRegister"

    class OutputSerializer(serializers.Serializer):
        id = IdField()
        platform = serializers.ChoiceField(choices=Device.Platform.values)
        token = serializers.CharField()
        created_at = serializers.DateTimeField()

        class Meta:
            ref_name = "Device"

    @extend_schema(
        operation_id="devices_register",
        tags=["devices"],
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: OutputSerializer, 200: OutputSerializer, **problems(*BODY, 401, 409, 422)},
        description="201 for a new device token, 200 when this user had already registered it.",
    )
    @idempotent(scope="devices.register")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        device, created = services.device_register(user_id=request.user.id, **data.validated_data)
        return Response(self.OutputSerializer(device).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DeviceDeleteApi(APIView):
    @extend_schema(
        operation_id="devices_delete",
        tags=["devices"],
        parameters=[
            path_parameter("token", pattern=TOKEN_PATTERN, max_length=4096, description="The device's push token."),
            IDEMPOTENCY_KEY,
        ],
        responses={204: None, **problems(400, 401, 404, 409, 422)},
    )
    @idempotent(scope="devices.delete")
    def delete(self, request, token: str):
        if len(token) > 4096:
            raise Problem(404, "not-found", "No such device for this user.", title="Not found")
        services.device_delete(user_id=request.user.id, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
