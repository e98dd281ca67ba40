"""The users service's OpenAPI schema: generated without a warning, complete, and true.

`test_schema_*` hold the schema to the public API (docs/api-schema.md); `test_api_conforms` is
schemathesis fuzzing every documented operation in-process against the real database and Redis,
authenticated as a real user with a real access token: no 5xx, and every status code, content
type and body as documented. Each operation's examples run inside one test transaction, rolled back.
"""

import re

import pytest
from django.core.wsgi import get_wsgi_application
from follows import services as follow_services

from shared.fuzzing import documented_schema, documented_shapes, fuzz_call, fuzz_settings, load_schema, served_shapes
from shared.openapi import ID_PATTERN, decimal_up_to, trimmed_text
from shared.testing import assert_problem

INTERNAL_ROUTES = [
    ("GET", "/internal/v1/users"),
    ("GET", "/internal/v1/users/by-username"),
    ("GET", "/internal/v1/users/{user_id}/follower-ids"),
]


def test_schema_generates_without_warnings_and_documents_every_route():
    schema = documented_schema("users", extra_routes=INTERNAL_ROUTES)
    schemes = schema["components"]["securitySchemes"]
    assert (schemes["bearerAuth"]["scheme"], schemes["bearerAuth"]["bearerFormat"]) == ("bearer", "JWT")
    assert (schemes["serviceToken"]["scheme"], schemes["serviceToken"]["bearerFormat"]) == ("bearer", "svc+jwt")
    assert schema["paths"]["/api/v1/users/me"]["get"]["security"] == [{"bearerAuth": []}]
    for method, path in INTERNAL_ROUTES:
        assert schema["paths"][path][method.lower()]["security"] == [{"serviceToken": []}]
    for method, path in [("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/register")]:
        assert "security" not in schema["paths"][path][method.lower()] or schema["paths"][path][method.lower()]["security"] == [
            {}
        ]


def test_schema_is_served(api_client):
    assert served_shapes(api_client) >= documented_shapes("users")


@pytest.fixture
def fuzz_user(make_user):
    """A real account with a real access token; its follows give the list endpoints something to page."""
    user, pair = make_user("fuzzer")
    for name in ("fuzz_friend", "fuzz_other"):
        other, _ = make_user(name)
        follow_services.follow_create(follower_id=user.id, followee_username=name)
        follow_services.follow_create(follower_id=other.id, followee_username="fuzzer")
    return pair.access


# loaded from the service's own /api/schema/ endpoint, through the WSGI application under test
schema = load_schema(get_wsgi_application())
# schema-valid, yet refused by a rule a schema cannot express: password strength, names already taken
BUSINESS_RULES = ["POST /api/v1/auth/register"]


@schema.parametrize()
@fuzz_settings()
def test_api_conforms(case, fuzz_user, service_client, settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "register_ip": "100000/min"}
    service_token = service_client._credentials["HTTP_AUTHORIZATION"].split()[1]
    fuzz_call(case, fuzz_user, service_token=service_token, business_rules=BUSINESS_RULES)


# what the fuzzer found, pinned down


def test_login_with_a_very_long_name_is_refused_not_a_server_error(api_client, db):
    response = api_client.post("/api/v1/auth/login", {"username": "0" * 254, "password": "x"}, format="json")
    assert_problem(response, 401, "invalid-token")


@pytest.mark.parametrize("segment", ["a%00b", "two%20words", "x" * 300, "%E2%9C%93"])
def test_a_path_that_cannot_be_a_username_is_a_404(segment, make_user, client_for):
    client = client_for(make_user()[0])
    for path in (f"/api/v1/users/{segment}", f"/api/v1/users/{segment}/followers"):
        assert_problem(client.get(path), 404, "not-found")
    assert_problem(client.post(f"/api/v1/users/{segment}/follow"), 404, "not-found")


def test_internal_lookup_by_username_refuses_what_cannot_be_a_name(service_client):
    response = service_client.get("/internal/v1/users/by-username?usernames=alice,a.b")
    assert_problem(response, 400, "validation-error")


def test_id_pattern_is_exactly_the_positive_64_bit_range():
    pattern = re.compile(ID_PATTERN)
    limit = 2**63 - 1
    for n in [1, 9, 10, 10**18 - 1, 10**18, limit - 1, limit, limit + 1, 9223372036854775810, 10**19, 0]:
        assert bool(pattern.match(str(n))) == (1 <= n <= limit), n
    for text in ["007", "0", "", "-1", " 1", "1e3"]:
        assert not pattern.match(text), text
    for small in (1, 9, 10, 999, 12345):
        small_pattern = re.compile(decimal_up_to(small))
        assert [n for n in range(small * 3 + 20) if small_pattern.match(str(n))] == list(range(1, small + 1))


def test_trimmed_text_is_what_strip_leaves():
    pattern = re.compile(trimmed_text(1, 5)["pattern"])
    for text in ["a", " a ", "abcde", "\tabcde\n", "a   b", "abcdef", "", "   ", "\x1d", "\x85a\x85", "a    b"]:
        assert bool(pattern.match(text)) == (1 <= len(text.strip()) <= 5), repr(text)
