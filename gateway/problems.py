"""Gateway error responses: `application/problem+json` (RFC 9457), same shape as the services'.

Never HTML, never a traceback. Bodies are built from fixed titles plus a detail string.
"""

from __future__ import annotations

import json

TYPE_BASE = "https://docs.social.example/problems/"  # same base as shared.problems

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

SLUGS = {
    400: ("malformed-request", "Malformed request"),
    401: ("invalid-token", "Authentication failed"),
    404: ("not-found", "Not found"),
    408: ("request-timeout", "Request timeout"),
    411: ("length-required", "Length required"),
    413: ("payload-too-large", "Request body too large"),
    414: ("uri-too-long", "URI too long"),
    429: ("rate-limited", "Too many requests"),
    431: ("headers-too-large", "Request headers too large"),
    500: ("internal-error", "Internal error"),
    501: ("not-implemented", "Not implemented"),
    502: ("bad-gateway", "Bad gateway"),
    503: ("service-unavailable", "Service unavailable"),
    504: ("gateway-timeout", "Gateway timeout"),
}


def reason(status: int) -> bytes:
    return REASONS.get(status, "Unknown").encode()


def body(status: int, detail: str, slug: str | None = None, title: str | None = None) -> bytes:
    s, t = SLUGS.get(status, ("error", REASONS.get(status, "Error")))
    return json.dumps(
        {"type": TYPE_BASE + (slug or s), "title": title or t, "status": status, "detail": detail}, separators=(",", ":")
    ).encode()


def response(
    status: int,
    detail: str,
    *,
    request_id: str,
    keep_alive: bool,
    head: bool = False,
    extra_headers: bytes = b"",
    slug: str | None = None,
    title: str | None = None,
) -> bytes:
    payload = body(status, detail, slug, title)
    head_bytes = b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason(status)),
            b"Content-Type: application/problem+json\r\n",
            b"Content-Length: %d\r\n" % len(payload),
            b"X-Request-ID: ",
            request_id.encode(),
            b"\r\n",
            b"Cache-Control: no-store\r\n",
            b"X-Content-Type-Options: nosniff\r\n",  # as every service answer (shared.security)
            extra_headers,
            b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n",
        )
    )
    return head_bytes if head else head_bytes + payload
