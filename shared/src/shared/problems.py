"""Every error as `application/problem+json` (RFC 9457), never HTML and never a traceback.

Three entry points cover every way a Django/DRF request can fail:
- `exception_handler` for everything DRF raises (validation, parse, auth, throttling, 404/405/415)
  and for the domain errors services raise (`shared.errors`: the one place they get a status);
- `bad_request`/`permission_denied`/`not_found`/`server_error` as Django's handler400/403/404/500
  (unknown URLs, errors outside DRF views, unhandled exceptions);
- `BodySizeLimitMiddleware` answering 413 before a too-large body is read.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from shared import errors, redis_clients

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://docs.social.example/problems/"
DEPENDENCY_UNAVAILABLE = "dependency-unavailable"
# set on a dependency-unavailable answer (value "dependency"): a 5xx a backing service caused, not
# the replica itself; the gateway's outlier detection reads it (docs/gateway.md#load-balancing)
FAILURE_CAUSE_HEADER = "X-Failure-Cause"
log = logging.getLogger("shared.problems")


class Problem(exceptions.APIException):
    """A domain error with its own problem type: `raise Problem(409, "already-exists", "...")`."""

    def __init__(self, status_code: int, slug: str, detail: str, *, title: str | None = None, **extra: Any):
        super().__init__(detail)
        self.status_code = status_code
        self.slug = slug
        self.title = title or slug.replace("-", " ").capitalize()
        self.extra = extra


def problem_body(status_code: int, slug: str, title: str, detail: str, **extra: Any) -> dict:
    return {"type": TYPE_BASE + slug, "title": title, "status": status_code, "detail": detail, **extra}


def problem_response(status_code: int, slug: str, title: str, detail: str, *, headers=None, **extra) -> JsonResponse:
    """A plain Django response (for middleware and handlers outside DRF)."""
    response = JsonResponse(
        problem_body(status_code, slug, title, detail, **extra), status=status_code, content_type=CONTENT_TYPE
    )
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def _field_errors(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for field, messages in detail.items():
            if isinstance(messages, dict):  # nested serializer: flatten as "parent.child"
                for sub, sub_messages in _field_errors(messages).items():
                    out[f"{field}.{sub}"] = sub_messages
            elif isinstance(messages, list):
                out[field] = [str(m) for m in messages]
            else:
                out[field] = [str(messages)]
        return out
    if isinstance(detail, list):
        return {"non_field_errors": [str(m) for m in detail]}
    return {"non_field_errors": [str(detail)]}


_SLUGS: list[tuple[type[Exception], int, str, str]] = [
    (exceptions.ParseError, 400, "malformed-request", "Malformed request"),
    (exceptions.NotAuthenticated, 401, "not-authenticated", "Authentication required"),
    (exceptions.AuthenticationFailed, 401, "invalid-token", "Authentication failed"),
    (exceptions.PermissionDenied, 403, "forbidden", "Forbidden"),
    (exceptions.NotFound, 404, "not-found", "Not found"),
    (exceptions.MethodNotAllowed, 405, "method-not-allowed", "Method not allowed"),
    (exceptions.NotAcceptable, 406, "not-acceptable", "Not acceptable"),
    (exceptions.UnsupportedMediaType, 415, "unsupported-media-type", "Unsupported media type"),
    (exceptions.Throttled, 429, "rate-limited", "Too many requests"),
]


def _from_domain(exc: errors.DomainError) -> exceptions.APIException:
    """The HTTP form of a domain error (its status from `errors.STATUS`)."""
    if isinstance(exc, errors.InvalidInput):
        return exceptions.ValidationError(exc.errors)
    if isinstance(exc, errors.CredentialsRejected):
        return exceptions.AuthenticationFailed(exc.message)  # 401 with WWW-Authenticate, as DRF's
    problem = Problem(errors.status_of(exc), exc.code, exc.message, title=exc.title, **exc.extra)
    if exc.retry_after is not None:
        problem.wait = exc.retry_after  # type: ignore[attr-defined]  # read below as Retry-After
    return problem


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF EXCEPTION_HANDLER: turn every API exception into problem+json."""
    if isinstance(exc, errors.DomainError):
        exc = _from_domain(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = Problem(413, "payload-too-large", "The request body is too large.", title="Payload too large")
    elif redis_clients.is_unavailable(exc):
        # what needs Redis cannot be done while it is away (reads and Postgres-backed writes degrade
        # instead, docs/faults.md): a 503 the client may retry, never a 500
        log.warning("redis unavailable: %s", exc)
        exc = Problem(
            503, DEPENDENCY_UNAVAILABLE, "A backing service is unavailable right now. Retry shortly.", title="Service unavailable"
        )
        exc.wait = redis_clients.RETRY_AFTER_SECONDS  # type: ignore[attr-defined]
    elif isinstance(exc, (OperationalError, InterfaceError)):
        # Postgres restarting, failing over or refusing connections (a statement timeout too): the
        # request did not complete and may be retried; the broken connection is replaced at the
        # next request (CONN_HEALTH_CHECKS), so this passes with its cause
        log.warning("database unavailable: %s", exc)
        exc = Problem(
            503, DEPENDENCY_UNAVAILABLE, "The database is unavailable right now. Retry shortly.", title="Service unavailable"
        )
        exc.wait = 1  # type: ignore[attr-defined]
    if not isinstance(exc, exceptions.APIException):
        return None  # unhandled: Django's handler500 answers, and the error is logged with its traceback

    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, Problem):
        slug, title, extra = exc.slug, exc.title, exc.extra
        detail = str(exc.detail)
    elif isinstance(exc, exceptions.ValidationError):
        slug, title = "validation-error", "Invalid input"
        extra = {"errors": _field_errors(exc.detail)}
        detail = "One or more fields are invalid."
    else:
        slug, title = next(((s, t) for cls, _, s, t in _SLUGS if isinstance(exc, cls)), ("error", "Error"))
        detail = str(exc.detail)
    status_code = exc.status_code
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        status_code = 401  # DRF downgrades to 403 on views without authenticators; a bad credential is a 401
        headers["WWW-Authenticate"] = 'Bearer realm="api"' + (
            ', error="invalid_token"' if isinstance(exc, exceptions.AuthenticationFailed) else ""
        )
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait) + 1)
    if slug == DEPENDENCY_UNAVAILABLE:
        # the replica is fine, what it depends on is not: the gateway does not count this answer
        # toward ejecting the replica, nor retries it on another (docs/gateway.md#load-balancing)
        headers[FAILURE_CAUSE_HEADER] = "dependency"
    set_rollback()
    body = problem_body(status_code, slug, title, detail, **extra)
    return Response(body, status=status_code, headers=headers, content_type=CONTENT_TYPE)


def bad_request(request, exception=None):
    return problem_response(400, "bad-request", "Bad request", "The request could not be understood.")


def permission_denied(request, exception=None):
    return problem_response(403, "forbidden", "Forbidden", "You do not have permission to do this.")


def not_found(request, exception=None):
    return problem_response(404, "not-found", "Not found", "No resource at this URL.")


def server_error(request):
    return problem_response(
        500,
        "internal-error",
        "Internal server error",
        "The server failed to handle this request; it has been logged.",
        request_id=getattr(request, "request_id", None),
    )


class BodySizeLimitMiddleware:
    """413 for bodies over DATA_UPLOAD_MAX_MEMORY_SIZE, judged by Content-Length before reading."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return problem_response(400, "bad-request", "Bad request", "Invalid Content-Length header.")
        if limit is not None and length > limit:
            return problem_response(
                413, "payload-too-large", "Payload too large", f"The request body is {length} bytes; the limit is {limit}."
            )
        return self.get_response(request)
