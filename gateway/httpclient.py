"""A minimal HTTP/1.1 GET for the gateway's control plane (JWKS, health checks).

Not on the hot path: one short-lived connection per call, parsed with httptools.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_mod
from urllib.parse import urlsplit

import httptools

MAX_BODY = 1 << 20


class _Collector:
    def __init__(self):
        self.status = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BODY:
            raise ValueError("response too large")
        self.chunks.append(data)

    def on_message_complete(self) -> None:
        self.done = True


async def get(
    host: str, port: int, path: str, *, timeout: float, use_ssl: bool = False, host_header: str | None = None
) -> tuple[int, bytes]:
    """GET path from host:port; returns (status, body). Raises OSError/ValueError/TimeoutError."""
    return await asyncio.wait_for(_get(host, port, path, use_ssl, host_header), timeout)


async def _get(host, port, path, use_ssl, host_header):
    ctx = ssl_mod.create_default_context() if use_ssl else None
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host_header or host}\r\nUser-Agent: social-gateway\r\n"
            f"Accept: application/json\r\nConnection: close\r\n\r\n".encode()
        )
        collector = _Collector()
        parser = httptools.HttpResponseParser(collector)
        while not collector.done:
            data = await reader.read(65536)
            if not data:
                try:
                    parser.feed_data(b"")  # lets a close-delimited body finish
                except httptools.HttpParserError:
                    pass
                if not collector.done:
                    raise ConnectionError("connection closed before the response was complete")
                break
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ValueError(f"bad HTTP response: {exc}") from None
        return parser.get_status_code(), b"".join(collector.chunks)
    finally:
        writer.close()


async def get_url(url: str, *, timeout: float) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return await get(parts.hostname, port, path, timeout=timeout, use_ssl=parts.scheme == "https", host_header=parts.netloc)
