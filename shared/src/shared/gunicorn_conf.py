"""Gunicorn settings every service runs with: `gunicorn -c python:shared.gunicorn_conf <svc>.wsgi`.

gthread workers keep client connections alive (the gateway pools them); graceful SIGTERM:
readiness fails first, in-flight requests finish within graceful_timeout.
"""

import gc
import os
import signal

bind = os.environ.get("BIND", "127.0.0.1:8100")
worker_class = "shared.gunicorn_worker.LingerThreadWorker"  # gthread, kept-alive connections served without the poller
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
keepalive = 75  # longer than the gateway's idle pool timeout, so the gateway closes first
graceful_timeout = 20
timeout = 30
# Request limits, set explicitly and above the gateway's (gateway/proxy.py MAX_URL 8000,
# MAX_HEADER_FIELDS 100, MAX_FIELD_SIZE 8190 plus the few headers the gateway adds), so the gateway
# refuses an oversized request first with problem+json and gunicorn's HTML error pages never reach
# a client. 8190 is gunicorn's largest request line.
limit_request_line = 8190
limit_request_fields = 150
limit_request_field_size = 16384
accesslog = None  # the gateway writes the access log; services log slow requests and errors
# gunicorn builds every request's access-log line whenever a logging config is given (below), even
# with accesslog off and nothing to write it to: ~9 % of a home timeline read's CPU. This logger
# class never builds it (docs/performance.md).
logger_class = "shared.gunicorn_logging.NoAccessLogger"
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn 25+ opens a control socket for `gunicornc` (worker counts, reload, shutdown) at
# ~/.gunicorn/gunicorn.ctl unless told otherwise: every master on a machine would take over that one
# path from the last, and the images' root filesystem is read-only. Off unless
# GUNICORN_CONTROL_SOCKET names this master's own path.
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True
# gunicorn's own lines (booting, worker exits, timeouts) in the log schema every process writes
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "shared.jsonlog.JsonFormatter",
            "service": os.environ.get("SERVICE_NAME") or os.environ.get("DJANGO_SETTINGS_MODULE", "").split("_service")[0],
        }
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},  # replaces gunicorn's default (its handlers are gone)
    "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False}},
}


def freeze_startup_objects() -> None:
    """Import every view now (Django imports the URLconf at the first request) and move everything
    alive to the collector's permanent generation (gc.freeze): a full collection no longer walks
    the ~110 000 objects of the imported application, ~70 ms with every thread of the worker
    stopped, a latency spike for every request in flight. GC_FREEZE=0 leaves the collector as it is."""
    if os.environ.get("GC_FREEZE", "1") == "0":
        return
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and every view module
    gc.collect()
    gc.freeze()


def post_worker_init(worker):
    from shared import ids
    from shared.health import start_draining

    ids.lease_early()  # settings.SNOWFLAKE_NAMESPACES: ids keep coming through a later Redis outage
    freeze_startup_objects()

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        start_draining()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
