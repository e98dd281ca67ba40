"""gzip compression of public JSON responses for clients that accept it (docs/api.md, decision in
docs/decisions.md: in the services, not at the gateway).

`CompressionMiddleware` (first in MIDDLEWARE, so it sees the final body and headers) compresses a
response when all of these hold:
- its path is public (`/api/v1/…`, `/.well-known/…`): calls between services and /metrics,
  /health, /api/schema/ are left alone;
- it is a whole (not streaming) `application/json` or `application/problem+json` body of at
  least COMPRESS_MIN_BYTES and has no Content-Encoding yet;
- it is not `Cache-Control: no-store`: those are the responses carrying tokens or an email address
  (shared.security); a secret is never compressed together with client-chosen text (BREACH);
- the request's Accept-Encoding accepts gzip (RFC 9110 §12.5.3: `gzip;q=0` refuses it, `*` covers
  it), and the gzip body is smaller than the identity body.

Every response that could be compressed carries `Vary: Accept-Encoding` whether or not this client
asked for it, and so does a 304 standing for one (shared.conditional). A compressed response gets
`Content-Encoding: gzip`, the compressed `Content-Length`, and a weak ETag (the identity body's
validator, shared.conditional: a gzip body never reuses a strong ETag).
"""

from __future__ import annotations

import gzip

from django.conf import settings
from django.utils.cache import patch_vary_headers

PUBLIC_PREFIXES = ("/api/v1/", "/.well-known/")
COMPRESSIBLE_TYPES = ("application/json", "application/problem+json")


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value accepts gzip: named with q > 0, or not named and `*` with q > 0."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # a malformed weight accepts nothing
        if coding in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def compressible(path: str, content_type: str, length: int, cache_control: str) -> bool:
    """Whether a response of this kind would be compressed for a client accepting gzip."""
    return (
        path.startswith(PUBLIC_PREFIXES)
        and content_type.split(";", 1)[0].strip().lower() in COMPRESSIBLE_TYPES
        and length >= settings.COMPRESS_MIN_BYTES
        and "no-store" not in cache_control.lower()
    )


def weak(etag: str) -> str:
    return etag if etag.startswith("W/") else "W/" + etag


class CompressionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.streaming or response.has_header("Content-Encoding"):
            return response
        if response.status_code == 304:
            # the identity representation the 304 stands for (shared.conditional keeps its type and length)
            content_type, length = getattr(response, "identity", ("", 0))
        else:
            content_type, length = response.get("Content-Type", ""), len(response.content)
        if not compressible(request.path, content_type, length, response.get("Cache-Control", "")):
            return response
        patch_vary_headers(response, ("Accept-Encoding",))
        if response.status_code == 304 or not accepts_gzip(request.META.get("HTTP_ACCEPT_ENCODING", "")):
            return response
        # mtime=0: the same body compresses to the same bytes (no timestamp in the gzip header)
        body = gzip.compress(response.content, compresslevel=settings.COMPRESS_LEVEL, mtime=0)
        if len(body) >= length:
            return response
        response.content = body
        response["Content-Length"] = str(len(body))
        response["Content-Encoding"] = "gzip"
        if response.has_header("ETag"):
            response["ETag"] = weak(response["ETag"])
        return response
