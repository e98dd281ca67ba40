"""`/metrics` for event processes: Celery workers and relays (`METRICS_PORT`; unset or 0: none),
on `METRICS_ADDR` (default 127.0.0.1).

Celery workers are prefork: handlers run in child processes, so a worker uses prometheus-client's
multiprocess mode. Each child writes its samples to files in `PROMETHEUS_MULTIPROC_DIR` and the
parent serves the sum over all children (replaced children included). When the variable is not
set, `make_celery` creates a fresh directory per worker. This module must not import
prometheus_client at import time: the multiprocess switch is read when that is first imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("shared.events")
_OWNED = "_EVENTS_METRICS_DIR_OWNED"
DEFAULT_METRICS_ADDR = "127.0.0.1"


def metrics_port() -> int:
    value = os.environ.get("METRICS_PORT", "").strip()
    return int(value) if value else 0


def metrics_addr() -> str:
    return os.environ.get("METRICS_ADDR", "").strip() or DEFAULT_METRICS_ADDR


def prepare_multiprocess_dir(name: str) -> str | None:
    """In a prefork parent, before prometheus_client is imported: children will write to a
    multiprocess directory that is empty at start (an earlier run's samples would be added in)."""
    if not metrics_port() or "prometheus_client" in sys.modules:
        return os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix=f"prometheus-{name}-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ[_OWNED] = directory
    return directory


def multiprocess_active() -> bool:
    from prometheus_client import values

    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and values.ValueClass.__name__ != "MutexValue"


def start_metrics_server(port: int | None = None, *, collectors: tuple = ()) -> int:
    """Serve /metrics on `port` (default METRICS_PORT) from a daemon thread; returns the port (0: none).
    Binds METRICS_ADDR: default 127.0.0.1 (loopback only: the endpoint has no authentication);
    a container sets 0.0.0.0 (or its pod address) so that a scraper on its network reaches it.
    `collectors` (custom prometheus_client collectors, e.g. shared.events.backlog's gauges) join the
    exposition."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    port = metrics_port() if port is None else port
    if not port:
        return 0
    registry = REGISTRY
    if multiprocess_active():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        logger.warning("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: /metrics shows this process only")
    for collector in collectors:
        registry.register(collector)
    _serve(port, metrics_addr(), registry)
    logger.info(
        "metrics served", extra={"metrics_addr": metrics_addr(), "metrics_port": port, "multiprocess": registry is not REGISTRY}
    )
    return port


def _serve(port: int, addr: str, registry) -> None:
    """prometheus_client's start_http_server, but its thread sleeps until a scrape arrives:
    socketserver's serve_forever() otherwise wakes every 0.5 s to check for a shutdown() this
    daemon thread never gets (two wake-ups a second in every worker and relay, while idle too)."""
    import socket
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    httpd = make_server(addr, port, make_wsgi_app(registry), Server, handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 3600}, name="metrics", daemon=True).start()


def remove_owned_dir() -> None:
    directory = os.environ.get(_OWNED)
    if directory and os.environ.get("PROMETHEUS_MULTIPROC_DIR") == directory:
        shutil.rmtree(directory, ignore_errors=True)
