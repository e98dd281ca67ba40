"""shared.gunicorn_worker.LingerThreadWorker in a real gunicorn: kept-alive connections are served by
the thread that answered their last request, and every connection is still served, whatever their
number against the threads, with pipelining, pauses and a graceful stop."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from shared.testing import start_gunicorn

APP = textwrap.dedent(
    """
    import threading, time

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(0.3)
        body = f"{threading.get_ident()} {environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    """
)


def start(tmp_path: Path, *, threads: int, linger_ms: int = 5) -> tuple[subprocess.Popen, int]:
    args = ["-k", "shared.gunicorn_worker.LingerThreadWorker", "--threads", str(threads)]
    args += ["--keep-alive", "30", "--graceful-timeout", "10"]
    proc, port, _ = start_gunicorn(tmp_path, APP, args, {"GUNICORN_LINGER_MS": str(linger_ms)}, name="linger")
    return proc, port


@pytest.fixture
def server(tmp_path):
    started: list[subprocess.Popen] = []

    def make(**kwargs) -> int:
        proc, port = start(tmp_path, **kwargs)
        started.append(proc)
        return port

    make.procs = started  # type: ignore[attr-defined]
    yield make
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


class Client:
    """One kept-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, *paths: str) -> None:
        self.sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in paths))

    def answer(self) -> tuple[int, str]:
        """The next answer: (thread id, path)."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(self.buf) < length:
            self.buf += self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        ident, path = body.decode().split(" ")
        return int(ident), path

    def get(self, path: str) -> tuple[int, str]:
        self.send(path)
        return self.answer()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def close(self) -> None:
        self.sock.close()


def test_a_kept_alive_connections_requests_are_served_by_one_thread(server):
    # a linger time no scheduling delay of this (possibly busy) machine reaches
    client = Client(server(threads=4, linger_ms=2000))
    answers = [client.get(f"/r{i}") for i in range(30)]
    assert [path for _, path in answers] == [f"/r{i}" for i in range(30)]
    assert len({ident for ident, _ in answers}) == 1  # each next request arrived within the linger time
    client.close()


def test_a_pause_longer_than_the_linger_hands_the_connection_back_to_the_poller(server):
    client = Client(server(threads=4, linger_ms=5))
    assert client.get("/before")[1] == "/before"
    time.sleep(0.2)  # the thread stopped waiting long ago: the poller has the connection
    assert client.get("/after")[1] == "/after"
    client.close()


def test_pipelined_requests_are_answered_in_order(server):
    client = Client(server(threads=2))
    client.send("/one", "/two", "/three")
    assert [client.answer()[1] for _ in range(3)] == ["/one", "/two", "/three"]
    client.close()


def test_more_connections_than_threads_are_all_served(server):
    """Two threads, so at most one waits on its connection: the other is free for the rest."""
    port = server(threads=2)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            client = Client(port)
            results[n] = [client.get(f"/c{n}-{i}")[1] for i in range(25)]
            client.close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    assert results == {n: [f"/c{n}-{i}" for i in range(25)] for n in range(8)}


def test_one_thread_never_waits_on_a_connection(server):
    """With one thread, waiting would block every other connection: it goes back to the poller."""
    port = server(threads=1)
    first, second = Client(port), Client(port)
    assert first.get("/a")[1] == "/a"
    assert second.get("/b")[1] == "/b"
    assert first.get("/c")[1] == "/c"
    first.close()
    second.close()


def test_a_stopping_worker_finishes_the_request_in_flight_and_exits(server):
    port = server(threads=2)
    idle, busy = Client(port), Client(port)
    assert idle.get("/kept")[1] == "/kept"  # its thread may be waiting for the next request now
    busy.send("/slow")
    time.sleep(0.1)
    proc = server.procs[0]
    proc.send_signal(signal.SIGTERM)
    assert busy.answer()[1] == "/slow"
    assert proc.wait(timeout=20) == 0
    idle.close()
    busy.close()
