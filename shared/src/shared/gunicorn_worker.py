"""gunicorn's gthread worker, with a kept-alive connection's next request served by the thread that
answered the last one (`worker_class = "shared.gunicorn_worker.LingerThreadWorker"`).

In gthread every request of a kept-alive connection goes through the main thread twice: the
connection is registered with the poller after an answer, the poller wakes when the next request
arrives, unregisters it and hands it to the thread pool, whose thread wakes up for it; the answer's
completion crosses back through a pipe. For the gateway's pooled connections (reused most recently
released first, so a busy one carries request after request) that machinery was a large share of a
service's CPU per request (docs/performance.md).

Here a thread that answered a kept-alive request first waits up to GUNICORN_LINGER_MS (5 ms; 0:
plain gthread) for that connection's next request and serves it itself; only when none comes does
the connection go back to the poller, as in gthread. Waiting costs no CPU (one `poll`), and at most
threads − 1 threads wait at once, so one is always free for the other connections' requests. A
stopping worker stops waiting at once (gthread's graceful stop then applies). Everything else — the
parser, keep-alive timeouts, deferral of slow clients, limits — is gthread's.
"""

from __future__ import annotations

import os
import select
import threading

from gunicorn.workers.gthread import ThreadWorker


def linger_seconds() -> float:
    return max(0, int(os.environ.get("GUNICORN_LINGER_MS", "5"))) / 1000


class LingerThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.linger = linger_seconds()
        self._waiting = 0  # threads waiting for their connection's next request
        self._waiting_lock = threading.Lock()

    def handle(self, conn):
        keep = super().handle(conn)
        while keep is True and self.alive and self._next_request(conn):
            keep = super().handle(conn)
        return keep

    def _next_request(self, conn) -> bool:
        """Whether the connection's next request is here, or arrived within the linger time (False:
        the connection goes back to the poller)."""
        if conn.parser.unreader.buf.getvalue():  # already read, with the last request's body
            return True
        if self.linger <= 0:
            return False
        with self._waiting_lock:
            if self._waiting >= self.cfg.threads - 1:
                return False
            self._waiting += 1
        try:
            poller = select.poll()
            poller.register(conn.sock.fileno(), select.POLLIN)
            return bool(poller.poll(self.linger * 1000)) and self.alive
        except (OSError, ValueError):
            return False
        finally:
            with self._waiting_lock:
                self._waiting -= 1
