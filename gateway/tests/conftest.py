"""Real processes for the gateway tests: Redis, small HTTP upstreams, and the gateway itself.

Every process is started in its own session and killed in fixture teardown, even on failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from shared.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
UPSTREAM = str(Path(__file__).with_name("upstream_server.py"))
sys.path.insert(0, str(ROOT / "dev"))
import infra  # noqa: E402

ISSUER, AUDIENCE = "social-users", "social-api"


def free_port() -> int:
    return infra.free_port()


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.03)
    raise TimeoutError(f"nothing on {host}:{port}")


def eventually(condition, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """`shared.testing.wait_until` with the gateway tests' defaults (in-process, fast)."""
    return wait_until(condition, timeout=timeout, what=what, interval=interval)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Upstream:
    def __init__(self, name: str, port: int, jwks_file: str | None = None, host: str = "127.0.0.1"):
        self.name, self.port, self.host, self.jwks_file = name, port, host, jwks_file
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Upstream:
        self.proc = subprocess.Popen(
            [PY, UPSTREAM, self.addr, self.name, self.jwks_file or ""],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.host, proc=self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            _kill(self.proc)

    def stats(self) -> dict:
        """The upstream's own counters (upstream_server.py: GET /_stats)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", "/_stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


class Keys:
    """An Ed25519 signing key set served as a JWKS file by the upstreams."""

    def __init__(self, path: Path):
        self.path = path
        self.private = {"k1": Ed25519PrivateKey.generate()}
        self.publish(["k1"])

    def publish(self, kids) -> None:
        keys = []
        for kid in kids:
            jwk = OKPAlgorithm.to_jwk(self.private[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": keys}))
        tmp.replace(self.path)

    def token(self, sub="42", username="alice", *, kid="k1", key=None, alg="EdDSA", typ="at+jwt", exp_in=600, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "username": username,
            "iat": now,
            "exp": now + exp_in,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {"kid": kid}
        if typ is not None:
            headers["typ"] = typ
        signing_key = key if key is not None else self.private[kid]
        return jwt.encode(claims, signing_key, algorithm=alg, headers=headers)


class Gateway:
    def __init__(self, tmp: Path, env: dict, routes: str | None = None):
        self.port, self.admin_port = free_port(), free_port()
        self.tmp = tmp
        self.routes_file = tmp / f"routes-{self.port}.yaml"
        if routes is not None:
            self.routes_file.write_text(routes)
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("GATEWAY_", "JWKS", "JWT_", "REDIS_URL")) or k == "GATEWAY_PURE_PYTHON"
            },
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_ADMIN_PORT": str(self.admin_port),
            "GATEWAY_DRAIN_DELAY": "0.2",
            "GATEWAY_HEALTH_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
            **({"GATEWAY_ROUTES": str(self.routes_file)} if routes is not None else {}),
            **env,
        }
        self.stdout = tmp / f"gateway-{self.port}.out"
        self.stderr = tmp / f"gateway-{self.port}.err"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Gateway:
        self.proc = subprocess.Popen(
            [PY, "-m", "gateway"],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=self.stdout.open("wb"),
            stderr=self.stderr.open("wb"),
        )
        wait_port(self.admin_port, proc=self.proc)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        """SIGTERM (drain: the master also removes its metrics directory), SIGKILL if it lingers."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=3)
            _kill(self.proc)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def request(self, method="GET", path="/", body=None, headers=None, port=None, timeout=10.0):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def admin(self, path):
        return self.request("GET", path, port=self.admin_port)

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        text = self.admin("/metrics").body.decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            series, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def access_log(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.read_text().splitlines() if line.strip()]

    def log_text(self) -> str:
        return self.stderr.read_text()


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    @property
    def upstream(self):
        return self.headers.get("x-upstream")

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


def problem(status: int, slug: str, title: str, detail: str) -> dict:
    return {"type": f"https://docs.social.example/problems/{slug}", "title": title, "status": status, "detail": detail}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = infra.start_redis(tmp_path_factory.mktemp("redis"), infra.free_port())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def procs():
    """Collects started Upstream/Gateway objects and kills them all at teardown."""
    started = []
    yield started
    for p in reversed(started):
        p.stop() if isinstance(p, Gateway) else p.kill()


@pytest.fixture(scope="module")
def module_procs():
    started = []
    yield started
    for p in reversed(started):
        p.stop() if isinstance(p, Gateway) else p.kill()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("jwks") / "jwks.json")
