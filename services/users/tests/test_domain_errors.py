"""Domain errors (`shared.errors`) become problem+json in one place, `shared.problems`."""

from __future__ import annotations

import json

import pytest
from django.db import InterfaceError, OperationalError
from rest_framework.test import APIClient

from shared import errors
from shared.problems import CONTENT_TYPE, TYPE_BASE, exception_handler


def handled(exc: Exception):
    response = exception_handler(exc, {})
    assert response is not None
    return response


@pytest.mark.parametrize(
    ("exc", "status", "code", "title"),
    [
        (errors.InvalidInput({"body": ["Too long."]}), 400, "validation-error", "Invalid input"),
        (errors.CredentialsRejected("Invalid refresh token."), 401, "invalid-token", "Authentication failed"),
        (errors.NotAllowed("Only the author can delete a post.", code="not-post-author"), 403, "not-post-author", "Forbidden"),
        (errors.NotFound("No such post."), 404, "not-found", "Not found"),
        (errors.Conflict("Already there."), 409, "conflict", "Conflict"),
        (
            errors.RuleViolated("You cannot follow yourself.", code="cannot-follow-self", title="Cannot follow self"),
            422,
            "cannot-follow-self",
            "Cannot follow self",
        ),
        (
            errors.LimitReached("At most 50 mentions an hour.", code="mention-rate-limited", retry_after=120),
            429,
            "mention-rate-limited",
            "Too many requests",
        ),
        (
            errors.DependencyUnavailable("Users cannot be reached.", retry_after=1),
            503,
            "dependency-unavailable",
            "Service unavailable",
        ),
    ],
)
def test_each_domain_error_has_one_status_and_a_problem_body(exc, status, code, title):
    response = handled(exc)
    assert (response.get("X-Failure-Cause") == "dependency") == isinstance(exc, errors.DependencyUnavailable)
    assert response.status_code == status
    assert response.content_type == CONTENT_TYPE  # the header is written when the view renders it
    assert response.data["type"] == TYPE_BASE + code
    assert response.data["title"] == title
    assert response.data["status"] == status


def test_invalid_input_lists_its_fields_and_says_what_failed_in_general():
    response = handled(errors.InvalidInput({"body": ["Must contain visible characters."]}))
    assert response.data["errors"] == {"body": ["Must contain visible characters."]}
    assert response.data["detail"] == "One or more fields are invalid."


def test_retry_after_and_extra_members_reach_the_client():
    response = handled(errors.LimitReached("Slow down.", retry_after=59, limit=50))
    assert int(response["Retry-After"]) >= 59
    assert response.data["limit"] == 50
    assert "Retry-After" not in handled(errors.NotFound("No such post."))


def test_rejected_credentials_ask_for_a_bearer_token_again():
    response = handled(errors.CredentialsRejected("This account no longer exists."))
    assert response["WWW-Authenticate"].startswith('Bearer realm="api"')
    assert response.data["detail"] == "This account no longer exists."


def test_every_class_has_a_status():
    leaves = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DomainError) and cls is not errors.DomainError
    ]
    assert sorted(c.__name__ for c in leaves) == sorted(c.__name__ for c in errors.STATUS)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("terminating connection due to administrator command"),
        InterfaceError("connection already closed"),
    ],
)
def test_a_database_that_is_away_is_a_503_the_client_may_retry(error):
    """Postgres restarting mid-request (make chaos's postgres-restart fault) is not a 500."""
    response = handled(error)
    assert response.status_code == 503
    assert response.data["type"] == TYPE_BASE + "dependency-unavailable"
    assert int(response["Retry-After"]) >= 1
    assert response["X-Failure-Cause"] == "dependency"  # every replica shares the database: no ejection


@pytest.mark.django_db
def test_a_service_refusal_reaches_the_client_as_its_problem():
    """End to end through a view: accounts.services raises InvalidInput for a taken username."""
    client = APIClient()
    body = {"username": "domainerr", "email": "domainerr@example.com", "password": "correct horse battery"}
    assert client.post("/api/v1/auth/register", body, format="json").status_code == 201
    again = client.post("/api/v1/auth/register", {**body, "email": "other@example.com"}, format="json")
    assert again.status_code == 400
    assert again["Content-Type"] == CONTENT_TYPE
    assert json.loads(again.content)["errors"] == {"username": ["This username is taken."]}
