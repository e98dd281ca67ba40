"""`python -m shared.healthcheck`: the containers' health check, against a real HTTP server and the
test run's real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.healthcheck", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health/ready" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_url_healthy_only_on_200(server):
    assert run(f"{server}/health/ready").returncode == 0
    unhealthy = run(f"{server}/draining")
    assert unhealthy.returncode == 1 and "503" in unhealthy.stderr
    refused = run(f"http://127.0.0.1:{closed_port()}/metrics")
    assert refused.returncode == 1 and "refused" in refused.stderr.lower()


def test_redis_check_pings_the_broker():
    url = os.environ.get("REDIS_URL_BASE") or os.environ["REDIS_URL"]
    assert run("--redis", REDIS_URL=url).returncode == 0
    down = run("--redis", REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    assert down.returncode == 1 and down.stderr.startswith("redis:")
    assert run("--redis", REDIS_URL="").returncode == 1
    assert run().returncode == 2
