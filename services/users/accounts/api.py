from django.core.validators import RegexValidator
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import keys, selectors, services
from accounts.throttles import AccountDeleteThrottle, LoginAccountThrottle, LoginIpThrottle, RegisterIpThrottle
from shared.fields import StrictCharField
from shared.idempotency import idempotent

USERNAME = RegexValidator(r"^[A-Za-z0-9_]{3,30}$", "3–30 characters: letters, digits and underscores.")


class ProfileSummarySerializer(serializers.Serializer):
    id = serializers.CharField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    avatar_url = serializers.CharField()


class PublicProfileSerializer(ProfileSummarySerializer):
    bio = serializers.CharField()
    followers_count = serializers.IntegerField()
    following_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class OwnProfileSerializer(PublicProfileSerializer):
    email = serializers.CharField()


def _auth_body(user, pair) -> dict:
    return {"user": OwnProfileSerializer(user).data, "access": pair.access, "refresh": pair.refresh,
            "token_type": "Bearer", "expires_in": pair.expires_in}


class RegisterApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes = [RegisterIpThrottle]

    class InputSerializer(serializers.Serializer):
        username = StrictCharField(max_length=30, validators=[USERNAME])
        email = serializers.EmailField(max_length=254)
        password = StrictCharField(max_length=128, trim_whitespace=False)
        display_name = StrictCharField(max_length=50, required=False, allow_blank=True)

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, pair = services.user_register(**data.validated_data)
        return Response(_auth_body(user, pair), status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes = [LoginIpThrottle, LoginAccountThrottle]

    class InputSerializer(serializers.Serializer):
        username = StrictCharField(max_length=254, required=False)
        email = StrictCharField(max_length=254, required=False)
        password = StrictCharField(max_length=128, trim_whitespace=False)

        def validate(self, attrs):
            if not attrs.get("username") and not attrs.get("email"):
                raise ValidationError({"username": ["Give a username or an email."]})
            return attrs

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        login = data.validated_data.get("username") or data.validated_data["email"]
        user, pair = services.user_login(login=login, password=data.validated_data["password"])
        return Response(_auth_body(user, pair))


class RefreshInputSerializer(serializers.Serializer):
    refresh = StrictCharField(max_length=200)


class RefreshApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request):
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pair = services.token_refresh(refresh=data.validated_data["refresh"])
        return Response({"access": pair.access, "refresh": pair.refresh, "token_type": "Bearer",
                         "expires_in": pair.expires_in})


class LogoutApi(APIView):
    def post(self, request):
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.token_revoke(user_id=request.user.id, refresh=data.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    throttle_classes = [AccountDeleteThrottle]  # counts DELETE only

    class DeleteSerializer(serializers.Serializer):
        password = StrictCharField(max_length=128, trim_whitespace=False)

    class UpdateSerializer(serializers.Serializer):
        display_name = StrictCharField(max_length=50, required=False, allow_blank=True)
        bio = StrictCharField(max_length=300, required=False, allow_blank=True)
        avatar_url = serializers.URLField(max_length=500, required=False, allow_blank=True)

        def validate(self, attrs):
            if "username" in self.initial_data:
                raise ValidationError({"username": ["The username cannot be changed."]})
            return attrs

    def get(self, request):
        user = selectors.user_by_id(user_id=request.user.id)
        if user is None:
            raise NotFound("This account no longer exists.")
        return Response(OwnProfileSerializer(user).data)

    @idempotent(scope="users.me.update")
    def patch(self, request):
        data = self.UpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update(user_id=request.user.id, **data.validated_data)
        return Response(OwnProfileSerializer(user).data)

    def delete(self, request):
        data = self.DeleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.user_delete(user_id=request.user.id, password=data.validated_data["password"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class JwksApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        response = Response(keys.jwks())
        response["Cache-Control"] = "public, max-age=300"
        return response
