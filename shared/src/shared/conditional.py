"""ETags and `If-None-Match` → 304 for the public GET endpoints (docs/api.md).

`ConditionalGetMiddleware` (last in MIDDLEWARE, so it sees the view's identity body) gives every
200 answer to a GET or HEAD on a public path (`/api/v1/…`, `/.well-known/…`) an ETag, unless the
view is `no_store` (tokens or an email address: nothing may keep it, so nothing can revalidate it)
or set its own:

- The ETag is weak, `W/"<hash>"`: a BLAKE2b digest of the viewer's id and the identity JSON body.
  Weak because the same representation goes out identity or gzip-encoded (shared.compression);
  the bytes differ, the content does not, and `If-None-Match` uses the weak comparison anyway
  (RFC 9110 §13.1.2). No strong ETag is ever sent for a body it does not describe byte for byte.
- Per viewer: the viewer's id is in the hash, so one user's validator never matches another's
  response, even where their bodies are equal. An authenticated response gets
  `Cache-Control: private, no-cache` (a client may keep it and must revalidate; no shared cache
  keeps it) and `Vary: Authorization`. An anonymous one (JWKS) keeps the view's Cache-Control.
- `If-None-Match` matching the current ETag (or `*`) → 304 with no body and the headers the 200
  would have carried (ETag, Cache-Control, Vary; RFC 9110 §15.4.5).

The view runs before the comparison: a 304 costs the same queries as a 200 and saves the bytes on
the wire and the client's parsing. Where the view itself is cheap (the unread count comes from
Redis, notifications.unread) so is the 304.
"""

from __future__ import annotations

import hashlib

from django.http import HttpResponseNotModified
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags

from shared.compression import PUBLIC_PREFIXES
from shared.security import view_class

PRIVATE = "private, no-cache"
KEPT_ON_304 = ("ETag", "Cache-Control", "Vary", "Expires", "Content-Location")


def etag_for(viewer: str, body: bytes) -> str:
    digest = hashlib.blake2b(viewer.encode() + b"\0" + body, digest_size=16).hexdigest()
    return f'W/"{digest}"'


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def none_match(header: str, etag: str) -> bool:
    """True when If-None-Match lists this ETag (weak comparison) or is `*`."""
    tags = parse_etags(header)
    return "*" in tags or _opaque(etag) in {_opaque(t) for t in tags}


class ConditionalGetMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.method not in ("GET", "HEAD")
            or response.status_code != 200
            or response.streaming
            or not request.path.startswith(PUBLIC_PREFIXES)
            or response.has_header("ETag")
            or getattr(view_class(request), "no_store", False)
        ):
            return response
        user = getattr(request, "user", None)
        viewer = str(getattr(user, "id", "")) if user is not None else ""
        etag = etag_for(viewer, response.content)
        response["ETag"] = etag
        if viewer:
            response["Cache-Control"] = PRIVATE
            patch_vary_headers(response, ("Authorization",))
        header = request.META.get("HTTP_IF_NONE_MATCH")
        if not header or not none_match(header, etag):
            return response
        not_modified = HttpResponseNotModified()
        for name in KEPT_ON_304:
            if response.has_header(name):
                not_modified[name] = response[name]
        # what shared.compression needs to add the 200's Vary: Accept-Encoding to this 304
        setattr(not_modified, "identity", (response.get("Content-Type", ""), len(response.content)))  # noqa: B010
        return not_modified
