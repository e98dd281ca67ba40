from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import keys, selectors, services
from accounts.throttles import AccountDeleteThrottle, LoginAccountThrottle, LoginIpThrottle, RegisterIpThrottle
from shared.fields import IdField, StrictCharField
from shared.idempotency import idempotent
from shared.openapi import BODY, IDEMPOTENCY_KEY, problems
from shared.text import display_text_problem, is_invisible, nfc
from shared.users_api.validation import USERNAME_HELP, USERNAME_MAX_LENGTH, USERNAME_PATTERN

USERNAME = RegexValidator(USERNAME_PATTERN, USERNAME_HELP)


class DisplayNameField(StrictCharField):
    """Normalised to NFC; control, formatting (bidi overrides, zero-width) and invisible characters
    are refused (shared.text). Another user's username is refused by the service."""

    def __init__(self, **kwargs):
        super().__init__(max_length=50, required=False, allow_blank=True, **kwargs)

    def to_internal_value(self, data):
        value = nfc(super().to_internal_value(data))
        problem = display_text_problem(value)
        if problem:
            raise ValidationError(problem)
        if value and is_invisible(value):
            raise ValidationError("Must contain visible characters.")
        return value


class ProfileSummarySerializer(serializers.Serializer):
    id = IdField()
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


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="Access token (JWT) for `Authorization: Bearer`.")
    refresh = serializers.CharField(help_text="Opaque, single-use refresh token.")
    token_type = serializers.ChoiceField(choices=["Bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class AuthSerializer(TokenPairSerializer):
    user = OwnProfileSerializer()


def _auth_body(user, pair) -> dict:
    return {
        "user": OwnProfileSerializer(user).data,
        "access": pair.access,
        "refresh": pair.refresh,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
    }


class RegisterApi(APIView):
    no_store = True  # tokens or email in the response (shared.security)
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes = [RegisterIpThrottle]

    class InputSerializer(serializers.Serializer):
        username = StrictCharField(max_length=USERNAME_MAX_LENGTH, validators=[USERNAME])
        email = serializers.EmailField(max_length=254)
        password = StrictCharField(max_length=128, trim_whitespace=False)
        display_name = DisplayNameField()

        class Meta:
            ref_name = "Register"

    @extend_schema(
        operation_id="auth_register",
        tags=["auth"],
        request=InputSerializer,
        responses={201: AuthSerializer, **problems(*BODY, 429)},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, pair = services.user_register(**data.validated_data)
        return Response(_auth_body(user, pair), status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    no_store = True  # tokens or email in the response (shared.security)
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes = [LoginIpThrottle, LoginAccountThrottle]

    class InputSerializer(serializers.Serializer):
        username = StrictCharField(max_length=254, required=False)
        email = StrictCharField(max_length=254, required=False)
        password = StrictCharField(max_length=128, trim_whitespace=False)

        class Meta:
            ref_name = "Login"

        def validate(self, attrs):
            if not attrs.get("username") and not attrs.get("email"):
                raise ValidationError({"username": ["Give a username or an email."]})
            return attrs

    @extend_schema(
        operation_id="auth_login",
        tags=["auth"],
        request=InputSerializer,
        responses={200: AuthSerializer, **problems(*BODY, 401, 429)},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        login = data.validated_data.get("username") or data.validated_data["email"]
        user, pair = services.user_login(login=login, password=data.validated_data["password"])
        return Response(_auth_body(user, pair))


class RefreshInputSerializer(serializers.Serializer):
    refresh = StrictCharField(max_length=200)


class RefreshApi(APIView):
    no_store = True  # tokens or email in the response (shared.security)
    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(
        operation_id="auth_refresh",
        tags=["auth"],
        request=RefreshInputSerializer,
        responses={200: TokenPairSerializer, **problems(*BODY, 401)},
        description="Rotates the refresh token; a reused one is 401 and revokes its whole family.",
    )
    def post(self, request):
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pair = services.token_refresh(refresh=data.validated_data["refresh"])
        return Response({"access": pair.access, "refresh": pair.refresh, "token_type": "Bearer", "expires_in": pair.expires_in})


class LogoutApi(APIView):
    @extend_schema(
        operation_id="auth_logout",
        tags=["auth"],
        request=RefreshInputSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={204: None, **problems(*BODY, 401, 409, 422)},
    )
    @idempotent(scope="auth.logout")
    def post(self, request):
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.token_revoke(user_id=request.user.id, refresh=data.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    no_store = True  # tokens or email in the response (shared.security)
    throttle_classes = [AccountDeleteThrottle]  # counts DELETE only

    class DeleteSerializer(serializers.Serializer):
        password = StrictCharField(max_length=128, trim_whitespace=False)

        class Meta:
            ref_name = "AccountDelete"

    class UpdateSerializer(serializers.Serializer):
        display_name = DisplayNameField()
        bio = StrictCharField(max_length=300, required=False, allow_blank=True)
        avatar_url = serializers.URLField(max_length=500, required=False, allow_blank=True)

        class Meta:
            ref_name = "ProfileUpdate"

        def validate(self, attrs):
            if "username" in self.initial_data:
                raise ValidationError({"username": ["The username cannot be changed."]})
            return attrs

    @extend_schema(operation_id="users_me_get", tags=["users"], responses={200: OwnProfileSerializer, **problems(401, 404)})
    def get(self, request):
        user = selectors.user_by_id(user_id=request.user.id)
        if user is None:
            raise NotFound("This account no longer exists.")
        return Response(OwnProfileSerializer(user).data)

    @extend_schema(
        operation_id="users_me_update",
        tags=["users"],
        request=UpdateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={200: OwnProfileSerializer, **problems(*BODY, 401, 404, 409, 422)},
    )
    @idempotent(scope="users.me.update")
    def patch(self, request):
        data = self.UpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update(user_id=request.user.id, **data.validated_data)
        return Response(OwnProfileSerializer(user).data)

    @extend_schema(
        operation_id="users_me_delete",
        tags=["users"],
        request=DeleteSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={204: None, **problems(*BODY, 401, 403, 404, 409, 422, 429)},
        description="Deletes the account; asks for the password again (403 `wrong-password` when wrong).",
    )
    @idempotent(scope="users.me.delete")
    def delete(self, request):
        data = self.DeleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.user_delete(user_id=request.user.id, password=data.validated_data["password"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class JwksApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(
        operation_id="jwks",
        tags=["auth"],
        responses={
            200: inline_serializer(
                "Jwks",
                fields={
                    "keys": serializers.ListField(child=serializers.DictField(), help_text="Public JWKs (OKP/Ed25519)."),
                },
            )
        },
    )
    def get(self, request):
        response = Response(keys.jwks())
        response["Cache-Control"] = "public, max-age=300"
        return response
