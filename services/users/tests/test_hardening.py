"""Hostile input from a security probe (issue 13): it gets a 400 problem and writes nothing."""

import pytest
from accounts.models import RefreshToken, User
from follows.models import Follow

from shared.testing import assert_problem
from tests.conftest import PASSWORD

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
    for method, path in [("patch", "/api/v1/users/me"), ("post", "/api/v1/auth/logout"), ("delete", "/api/v1/users/me")]:
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


def test_responses_with_tokens_or_email_are_not_stored_and_every_response_is_nosniff(api_client, client_for):
    registered = api_client.post(
        "/api/v1/auth/register", {"username": "carol", "email": "carol@example.com", "password": PASSWORD}, format="json"
    )
    logged_in = api_client.post("/api/v1/auth/login", {"username": "carol", "password": PASSWORD}, format="json")
    refreshed = api_client.post("/api/v1/auth/refresh", {"refresh": logged_in.json()["refresh"]}, format="json")
    carol = client_for(User.objects.get(username="carol"))
    me = carol.get("/api/v1/users/me")
    updated = carol.patch("/api/v1/users/me", {"bio": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    replayed = carol.patch("/api/v1/users/me", {"bio": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    failed_login = api_client.post("/api/v1/auth/login", {"username": "carol", "password": "wrong"}, format="json")
    for response in (registered, logged_in, refreshed, me, updated, replayed, failed_login):
        assert response.status_code < 500
        assert response["Cache-Control"] == "no-store", response.status_code
        assert response["X-Content-Type-Options"] == "nosniff"
    for response in (carol.get("/api/v1/users/carol"), api_client.get("/no/such/url"), api_client.get("/.well-known/jwks.json")):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert "no-store" not in response.get("Cache-Control", "")


@pytest.mark.parametrize(
    "display_name",
    [
        "evil\u202egnp.exe",  # right-to-left override
        "a\u2066b\u2069",  # bidi isolate
        "al\u200bice",  # zero-width space
        "\u200d",  # a lone zero-width joiner
        "bell\x07",
        "tab\there",
        "nul\x00",  # control characters
        "\u3164",  # Hangul filler: looks empty
        "line\u2028break",
    ],
)
def test_display_name_with_control_or_invisible_characters_is_refused(alice, client_for, api_client, display_name):
    response = client_for(alice).patch("/api/v1/users/me", {"display_name": display_name}, format="json")
    assert list(assert_problem(response, 400, "validation-error")["errors"]) == ["display_name"]
    registered = api_client.post(
        "/api/v1/auth/register",
        {"username": "carol", "email": "carol@example.com", "password": PASSWORD, "display_name": display_name},
        format="json",
    )
    assert list(assert_problem(registered, 400, "validation-error")["errors"]) == ["display_name"]
    alice.refresh_from_db()
    assert alice.display_name == "alice" and not User.objects.filter(username="carol").exists()


def test_display_name_is_stored_nfc_and_emoji_sequences_are_kept(alice, client_for):
    decomposed = "Cafe\u0301"  # e + combining acute accent
    response = client_for(alice).patch("/api/v1/users/me", {"display_name": decomposed}, format="json")
    assert response.status_code == 200 and response.json()["display_name"] == "Caf\u00e9"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 Alice"
    assert client_for(alice).patch("/api/v1/users/me", {"display_name": family}, format="json").json()["display_name"] == family


@pytest.mark.parametrize("display_name", ["bob", "BOB", "@bob", "\uff42\uff4f\uff42"])  # last: full-width "bob"
def test_display_name_may_not_be_another_users_username(alice, bob, client_for, api_client, display_name):
    response = client_for(alice).patch("/api/v1/users/me", {"display_name": display_name}, format="json")
    assert assert_problem(response, 400, "validation-error")["errors"] == {"display_name": ["This is another user's username."]}
    registered = api_client.post(
        "/api/v1/auth/register",
        {"username": "carol", "email": "carol@example.com", "password": PASSWORD, "display_name": display_name},
        format="json",
    )
    assert_problem(registered, 400, "validation-error")
    alice.refresh_from_db()
    assert alice.display_name == "alice" and not User.objects.filter(username="carol").exists()
    # one's own username, in any case, is fine
    assert client_for(alice).patch("/api/v1/users/me", {"display_name": "ALICE"}, format="json").status_code == 200
