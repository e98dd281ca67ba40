"""Domain errors: what a service function refuses, said in the domain's terms.

Services and selectors raise these and know nothing of HTTP; `shared.problems.exception_handler`
is the one place that maps each class to a status code and writes `application/problem+json`
(as HackSoft's Django Styleguide keeps the mapping in `core/exceptions.py`). Views and other
HTTP-layer code (parsers, pagination, idempotency) keep raising `shared.problems.Problem` or DRF's
exceptions: there the HTTP shape is the point.

    raise NotFound("No such post.")
    raise InvalidInput({"body": ["Must contain visible characters."]})
    raise NotAllowed("Only the author can delete a post.", code="not-post-author")

`code` is the problem type's slug (`https://docs.social.example/problems/<code>`): each class has a
default, and a raise site names a more precise one where clients tell them apart. Extra keyword
arguments become members of the problem body.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class; `code` and `title` are the problem's type slug and title."""

    code = "error"
    title = "Error"

    def __init__(
        self, message: str, *, code: str | None = None, title: str | None = None, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.retry_after = retry_after  # seconds at least; Retry-After (rounded up, as DRF throttles do)
        self.extra = extra


class InvalidInput(DomainError):
    """The input breaks a rule of the domain; `errors` maps each field to its messages."""

    code = "validation-error"
    title = "Invalid input"

    def __init__(self, errors: dict[str, list[str]], message: str = "One or more fields are invalid.") -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class CredentialsRejected(DomainError):
    """A password, refresh token or account the caller presented is not (or no longer) valid."""

    code = "invalid-token"
    title = "Authentication failed"


class NotAllowed(DomainError):
    """The caller is known but may not do this."""

    code = "forbidden"
    title = "Forbidden"


class NotFound(DomainError):
    """What the operation names does not exist (or is not visible to the caller)."""

    code = "not-found"
    title = "Not found"


class Conflict(DomainError):
    """The operation clashes with the current state (a duplicate, a concurrent change)."""

    code = "conflict"
    title = "Conflict"


class RuleViolated(DomainError):
    """Well-formed input that a business rule refuses (following yourself)."""

    code = "rule-violated"
    title = "Unprocessable"


class LimitReached(DomainError):
    """A quota of the domain (mentions an hour) is used up until `retry_after` seconds pass."""

    code = "rate-limited"
    title = "Too many requests"


class DependencyUnavailable(DomainError):
    """Another service or a backing store the operation needs is away; the caller may retry."""

    code = "dependency-unavailable"
    title = "Service unavailable"


# the HTTP status of each class: read by shared.problems only
STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    CredentialsRejected: 401,
    NotAllowed: 403,
    NotFound: 404,
    Conflict: 409,
    RuleViolated: 422,
    LimitReached: 429,
    DependencyUnavailable: 503,
}


def status_of(exc: DomainError) -> int:
    return next((status for cls, status in STATUS.items() if isinstance(exc, cls)), 500)
