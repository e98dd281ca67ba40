"""The admin listener (GATEWAY_ADMIN_PORT, default 8001): /health/live, /health/ready, /metrics, /version.

Kept off the public port so probes and scrapes never compete with (or leak to) API traffic.
"""

from __future__ import annotations

import asyncio
import json

import httptools

from . import buildinfo, metrics, problems


class AdminConn(asyncio.Protocol):
    def __init__(self, is_ready):
        self.is_ready = is_ready
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, "application/problem+json", problems.body(400, "malformed HTTP request"), close=True)

    def on_message_begin(self):
        self.url = b""

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        if method not in (b"GET", b"HEAD"):
            return self._send(
                405, "application/problem+json", problems.body(405, "only GET", "method-not-allowed", "Method not allowed"), keep
            )
        if path == b"/health/live":
            return self._send(200, "application/json", buildinfo.info_json(status="ok"), keep)
        if path == b"/version":
            return self._send(200, "application/json", buildinfo.info_json(), keep)
        if path == b"/health/ready":
            ready, why = self.is_ready()
            body = json.dumps({"status": "ok" if ready else "unavailable", "detail": why}).encode()
            return self._send(200 if ready else 503, "application/json", body, keep)
        if path == b"/metrics":
            return self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics.exposition(), keep)
        return self._send(404, "application/problem+json", problems.body(404, "no such admin endpoint"), keep)

    def _send(self, status, ctype, body, keep=False, close=False):
        if self.transport.is_closing():
            return
        keep = keep and not close
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nConnection: %s\r\n\r\n%s"
            % (status, problems.reason(status), ctype.encode(), len(body), b"keep-alive" if keep else b"close", body)
        )
        if not keep:
            self.transport.close()


async def serve(loop, host: str, port: int, is_ready):
    return await loop.create_server(lambda: AdminConn(is_ready), host, port, reuse_address=True)
