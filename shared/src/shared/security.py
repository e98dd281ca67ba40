"""Response headers that keep clients and caches from mishandling what a service answers.

`SecurityHeadersMiddleware` (first in MIDDLEWARE, so errors, 413s and unknown URLs are covered):
- `X-Content-Type-Options: nosniff` on every response: a browser never guesses a type other
  than the declared `application/json` / `application/problem+json`.
- `Cache-Control: no-store` on every response of a view whose class sets `no_store = True`: the
  ones that carry a token or an email address (register, login, refresh, the own profile). Set by
  the view class, not by each return statement, so an idempotent replay or an error of such a
  view gets it too; no cache, shared or private, keeps a credential or personal data.
"""

from __future__ import annotations

NO_STORE = "no-store"


def view_class(request):
    match = getattr(request, "resolver_match", None)
    func = getattr(match, "func", None)
    return getattr(func, "cls", None) or getattr(func, "view_class", None)


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Content-Type-Options"] = "nosniff"
        if getattr(view_class(request), "no_store", False):
            response["Cache-Control"] = NO_STORE
        return response
