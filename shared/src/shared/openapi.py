"""OpenAPI (drf-spectacular) building blocks every service declares its views with.

- the two authenticators as security schemes: `bearerAuth` (end-user access token, a JWT) and
  `serviceToken` (the 60-second per-service credential on /internal/ endpoints);
- one `Problem` component (RFC 9457, `application/problem+json`) for every error response, so all
  services document errors the same way: `problems(400, 401, 404)`;
- cursor pagination: `CURSOR_PARAMETERS` and `page_of(Serializer)` for `{results, next_cursor}`;
- `IDEMPOTENCY_KEY` for writes that accept an `Idempotency-Key` header;
- typed path parameters (`ID_PATH`, `USERNAME_PATH`, ...): what the URL really accepts.

A view declares its contract with `@extend_schema(request=..., responses={200: X, **problems(...)})`;
`manage.py spectacular --validate --fail-on-warn` and the schemathesis fuzz tests hold it to that.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from shared.pagination import DEFAULT_LIMIT, MAX_LIMIT
from shared.problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from shared.users_api.validation import USERNAME_PATTERN

MAX_ID = 2**63 - 1


def decimal_up_to(limit: int) -> str:
    """A regex for the canonical decimal strings (no sign, no leading zero) of 1..limit."""
    digits = str(limit)
    shorter = f"[1-9][0-9]{{0,{len(digits) - 2}}}" if len(digits) > 1 else ""
    same_length = [
        f"{digits[:i]}[{1 if i == 0 else 0}-{int(d) - 1}][0-9]{{{len(digits) - i - 1}}}"
        for i, d in enumerate(digits)
        if int(d) - 1 >= (1 if i == 0 else 0)
    ]
    return "^(?:" + "|".join(filter(None, [shorter, *same_length, digits])) + ")$"


# at least one character that str.strip() keeps (Python's whitespace: ECMA's \s plus \x1c-\x1f and \x85)
NOT_BLANK = r"[^\s\u001c-\u001f\u0085]"
_SPACE = r"[\s\u001c-\u001f\u0085]"


def trimmed_text(min_length: int, max_length: int) -> dict:
    """A string that is min..max characters long once str.strip() has trimmed it."""
    assert min_length == 1 <= max_length
    middle = rf"(?:[\s\S]{{0,{max_length - 2}}}{NOT_BLANK})?" if max_length > 1 else ""
    return {
        "type": "string",
        "pattern": f"^{_SPACE}*{NOT_BLANK}{middle}{_SPACE}*$",
        "description": f"{min_length} to {max_length} characters after trimming whitespace.",
    }


# a 64-bit id as JSON carries it: a decimal string, 1 to 2^63-1 (JavaScript numbers cannot hold it)
ID_PATTERN = decimal_up_to(MAX_ID)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS), plus: a request body on
    DELETE when the view declares one with `@extend_schema(request=...)` (DELETE /api/v1/users/me takes
    the password); a declared raw-schema body is required; a trimmed non-blank string field says it
    must hold more than whitespace. Importing this module (as the schema class) also registers the
    extensions below."""

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and field.trim_whitespace
            and not field.allow_blank
            and schema.get("type") == "string"
            and "pattern" not in schema
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):  # its pattern goes in later
            schema["pattern"] = NOT_BLANK  # DRF strips whitespace first: "  " is blank, so refused
        return schema

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        # a raw JSON schema declared as a request body (mark-read's oneOf) is a body the endpoint requires
        return schema, required or isinstance(serializer, dict)

    def get_request_serializer(self):
        if self.method == "DELETE":  # never guessed; a declared one comes from @extend_schema's subclass
            return None
        return super().get_request_serializer()

    def _get_request_body(self, direction="request"):
        if self.method != "DELETE":
            return super()._get_request_body(direction)
        if self.get_request_serializer() is None:
            return None
        self.method = "POST"  # the base class documents bodies on PUT/PATCH/POST only
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"


class AccessTokenScheme(OpenApiAuthenticationExtension):
    target_class = "shared.auth.AccessTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from /api/v1/auth/login, /register or /refresh (EdDSA JWT, short-lived).",
        }


class ServiceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "shared.auth.ServiceTokenAuthentication"
    name = "serviceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "svc+jwt",
            "description": "Service credential (EdDSA JWT signed with the calling service's own key, "
            "iss = calling service, aud = this service, 60 s). "
            "Internal endpoints only; never routed by the gateway.",
        }


class IdFieldSchema(OpenApiSerializerFieldExtension):
    """`shared.fields.IdField`: a 64-bit id as a string of digits (JavaScript numbers cannot hold it)."""

    target_class = "shared.fields.IdField"

    def map_serializer_field(self, auto_schema, direction):
        as_string = {"type": "string", "pattern": ID_PATTERN, "example": "1234567890123"}
        if direction == "request":  # IdField also takes a JSON integer in range
            return {"oneOf": [as_string, {"type": "integer", "minimum": 1, "maximum": MAX_ID}]}
        return as_string


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, as `shared.problems` writes them."""

    type = serializers.URLField(help_text="Problem type URI; the last segment is a stable slug.")
    title = serializers.CharField()
    status = serializers.IntegerField(min_value=400, max_value=599)
    detail = serializers.CharField()
    request_id = serializers.CharField(required=False, allow_null=True, help_text="500 only: the request's id.")

    class Meta:
        ref_name = "Problem"


# declared after the class: a class attribute named `errors` would shadow Serializer.errors
ProblemSerializer._declared_fields["errors"] = serializers.DictField(
    child=serializers.ListField(child=serializers.CharField()),
    required=False,
    help_text="Validation errors only: field name → messages.",
)


_DESCRIPTIONS = {
    400: "Invalid input (`validation-error` with `errors`) or a malformed request.",
    401: "Missing, invalid or expired credential.",
    403: "Not allowed.",
    404: "No such resource.",
    406: "The Accept header names no media type this API serves.",
    409: "A request with this Idempotency-Key is still in progress.",
    413: "The request body is too large.",
    415: "The request body is not JSON.",
    422: "The request cannot be applied (for example an Idempotency-Key reused with a different body).",
    429: "Too many requests; see Retry-After.",
    503: "A dependency is unavailable; retry later.",
}


def problems(*statuses: int) -> dict[Any, OpenApiResponse]:
    """Error responses for `@extend_schema(responses=...)`: each an `application/problem+json` Problem."""
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemSerializer, description=_DESCRIPTIONS[status])
        for status in statuses
    }


# What any endpoint with a JSON body can answer besides its own errors: invalid, too large, not JSON.
BODY = (400, 413, 415)

CURSOR_PARAMETERS = [
    OpenApiParameter("cursor", str, OpenApiParameter.QUERY, description="Opaque cursor from the previous page's `next_cursor`."),
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        OpenApiParameter.QUERY,
        description=f"Page size, 1–{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    ),
]

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x20-\x7e]+$"},
    OpenApiParameter.HEADER,
    required=False,
    description="A replay returns the first response (with `Idempotent-Replayed: true`); "
    "the same key with a different body is 422.",
)


def path_parameter(
    name: str, *, pattern: str | None = None, max_length: int | None = None, description: str = ""
) -> OpenApiParameter:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    if max_length:
        schema["maxLength"] = max_length
    return OpenApiParameter(name, schema, OpenApiParameter.PATH, description=description)


def id_path(name: str, what: str) -> OpenApiParameter:
    return path_parameter(name, pattern=ID_PATTERN, description=f"The {what}'s id (a 64-bit id as decimal digits).")


USERNAME_PATH = path_parameter("username", pattern=USERNAME_PATTERN, description="A username (case-insensitive).")

_pages: dict[str, serializers.Serializer] = {}


def page_of(item: type[serializers.Serializer], name: str | None = None) -> serializers.Serializer:
    """The `{results: [item], next_cursor}` envelope of a cursor-paginated list, as a named component."""
    component = f"{name or item.__name__.removesuffix('Serializer')}Page"
    if component not in _pages:
        _pages[component] = inline_serializer(
            component,
            fields={
                "results": item(many=True),
                "next_cursor": serializers.CharField(allow_null=True, help_text="Cursor of the next page; null on the last."),
            },
        )
    return _pages[component]
