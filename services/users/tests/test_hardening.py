"""Hostile input from a security probe (issue 13): it gets a 400 problem and writes nothing."""

import pytest
from accounts.models import RefreshToken, User
from follows.models import Follow

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db

NESTED = ["[" * 1000, "[" * 60_000, '{"a":' * 1000, "[" * 40 + "]" * 40]


@pytest.mark.parametrize("body", NESTED)
@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh"])
def test_deeply_nested_json_is_a_400_problem_on_public_endpoints(api_client, path, body):
    response = api_client.post(path, data=body, content_type="application/json")
    problem = assert_problem(response, 400, "malformed-request")
    assert "nested" in problem["detail"] or "parse" in problem["detail"]
    assert User.objects.count() == 0


@pytest.mark.parametrize("body", NESTED)
def test_deeply_nested_json_is_a_400_problem_on_authenticated_writes(alice, client_for, body):
    client = client_for(alice)
    for method, path in [("patch", "/api/v1/users/me"), ("post", "/api/v1/auth/logout"),
                         ("delete", "/api/v1/users/me")]:
        response = getattr(client, method)(path, data=body, content_type="application/json")
        assert_problem(response, 400, "malformed-request")
    assert User.objects.filter(id=alice.id).exists()
    assert RefreshToken.objects.filter(user_id=alice.id, revoked_at__isnull=True).count() == 1
    assert Follow.objects.count() == 0


def test_json_nested_within_the_limit_still_parses(api_client):
    # 32 levels is the limit; a field holding such a value is a validation error, not a parse error
    body = '{"username": ' + "[" * 31 + "]" * 31 + ', "password": "x"}'
    response = api_client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert_problem(response, 400, "validation-error")
