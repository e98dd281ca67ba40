"""A small real HTTP/1.1 upstream for the gateway tests (keep-alive, threaded), run as a subprocess.

    python upstream_server.py [HOST:]PORT NAME [JWKS_FILE]

Every path echoes the request as JSON, except:
  /health/ready, /health/live  -> 200 {"status": "ok"} (503 if the file <JWKS_FILE>.unready exists)
  /.well-known/jwks.json       -> the JWKS file's contents
  ...?sleep=SECONDS            -> answers after sleeping
  ...?status=CODE[&only=NAME]  -> answers with that status (only on replica NAME if given); with
                                  &retry_after=S a Retry-After header, with &cause=dependency the
                                  X-Failure-Cause header the services set on dependency failures
  ...?needs_redis=PORT          -> PING the Redis on 127.0.0.1:PORT: 200 when it answers, else 503
                                  problem+json with Retry-After (what a service answers for what
                                  truly needs Redis)
  ...?chunked=N                -> N chunks of "chunk-i\n", chunked transfer encoding
  ...?die_after_head=NAME      -> replica NAME sends a response head (Content-Length 100) and exits
  ...?die=NAME                 -> replica NAME exits without answering (the connection is reset)
  /_stats                      -> {"served": n, "inflight": n, "peak": n, "health": n}: requests
                                  answered, being answered now, the most answered at once (health
                                  checks excluded), and health checks answered
"""

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST, _, PORT = sys.argv[1].rpartition(":")
HOST, PORT, NAME = HOST or "127.0.0.1", int(PORT), sys.argv[2]
JWKS_FILE = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None


STATS = {"served": 0, "inflight": 0, "peak": 0, "health": 0}
STATS_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _answer(self):
        parts = urlsplit(self.path)
        if parts.path == "/_stats":
            with STATS_LOCK:
                return self._send(200, dict(STATS))
        if parts.path.startswith("/health/"):
            self._serve(parts)
            with STATS_LOCK:  # counted once answered: the checker has the whole answer
                STATS["health"] += 1
            return None
        with STATS_LOCK:
            STATS["inflight"] += 1
            STATS["peak"] = max(STATS["peak"], STATS["inflight"])
        try:
            return self._serve(parts)
        finally:
            with STATS_LOCK:
                STATS["inflight"] -= 1
                STATS["served"] += 1

    def _serve(self, parts):
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path.startswith("/health/"):
            unready = JWKS_FILE and os.path.exists(JWKS_FILE + ".unready")
            return self._send(503 if unready else 200, {"status": "unavailable" if unready else "ok"})
        if parts.path == "/.well-known/jwks.json" and JWKS_FILE:
            with open(JWKS_FILE, "rb") as fh:
                data = fh.read()
            return self._send(200, None, raw=data)
        if "sleep" in q:
            time.sleep(float(q["sleep"]))
        if q.get("die") == NAME:
            os._exit(1)
        if q.get("die_after_head") == NAME:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            time.sleep(0.2)  # the head is read and parsed on the other side before the process dies
            os._exit(1)
        if "chunked" in q:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(q["chunked"])):
                piece = f"chunk-{i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if "needs_redis" in q:
            if _redis_answers(int(q["needs_redis"])):
                return self._send(200, {"server": NAME, "redis": "ok"})
            return self._send(
                503,
                {
                    "type": "https://docs.social.example/problems/dependency-unavailable",
                    "title": "Service unavailable",
                    "status": 503,
                },
                headers={"Retry-After": "2", "Content-Type": "application/problem+json"},
            )
        status = int(q.get("status", 200)) if q.get("only", NAME) == NAME else 200
        headers = {}
        if status >= 500 and "retry_after" in q:
            headers["Retry-After"] = q["retry_after"]
        if status >= 500 and q.get("cause"):
            headers["X-Failure-Cause"] = q["cause"]
        self._send(
            status,
            {
                "server": NAME,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_len": len(body),
                "body": body[:200].decode("latin-1"),
            },
            headers=headers,
        )

    def _send(self, status, payload, raw=None, headers=None):
        data = raw if raw is not None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", NAME)
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


if __name__ == "__main__":
    Server((HOST, PORT), Handler).serve_forever()
