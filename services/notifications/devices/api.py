from django.core.validators import RegexValidator
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import services
from devices.models import Device
from shared.fields import StrictCharField
from shared.problems import Problem

TOKEN = RegexValidator(r"^[A-Za-z0-9_:.\-]+$", "Letters, digits and _ : . - only.")


class DeviceCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        platform = serializers.ChoiceField(choices=Device.Platform.values)
        token = StrictCharField(min_length=1, max_length=4096, validators=[TOKEN])

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()
        platform = serializers.CharField()
        token = serializers.CharField()
        created_at = serializers.DateTimeField()

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        device, created = services.device_register(user_id=request.user.id, **data.validated_data)
        return Response(self.OutputSerializer(device).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DeviceDeleteApi(APIView):
    def delete(self, request, token: str):
        if len(token) > 4096:
            raise Problem(404, "not-found", "No such device for this user.", title="Not found")
        services.device_delete(user_id=request.user.id, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
