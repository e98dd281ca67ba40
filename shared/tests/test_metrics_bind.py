"""Workers' and relays' /metrics (shared.events.exposition) listen on loopback unless told otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

SERVE = (
    "import time; from shared.events.exposition import start_metrics_server; "
    "start_metrics_server(); print('up', flush=True); time.sleep(120)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on `port`, read from the kernel's tables."""
    found = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            lines = f.read().splitlines()[1:]
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            if family == 4:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _serve(extra_env: dict) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("METRICS_ADDR", "PROMETHEUS_MULTIPROC_DIR")}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE], env={**env, "METRICS_PORT": str(port), **extra_env}, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not _listening_addresses(port):
        assert process.poll() is None, "the metrics server exited"
        assert time.monotonic() < deadline, "the metrics server did not listen in time"
        time.sleep(0.05)
    return process, port


@pytest.mark.parametrize(
    ("env", "expected"), [({}, {"127.0.0.1"}), ({"METRICS_ADDR": ""}, {"127.0.0.1"}), ({"METRICS_ADDR": "0.0.0.0"}, {"0.0.0.0"})]
)
def test_metrics_bind_address(env, expected):
    process, port = _serve(env)
    try:
        assert _listening_addresses(port) == expected
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200 and "# TYPE" in response.text
    finally:
        process.kill()
        process.wait()
