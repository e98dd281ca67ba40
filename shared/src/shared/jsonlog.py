"""JSON log lines: one object per line, the schema every process writes (the gateway's
gateway/logs.py writes the same fields; docs/operations.md#logs):

    ts          ISO 8601, UTC, milliseconds ("2026-12-01T17:35:36.123+00:00")
    level       debug | info | warning | error | critical
    logger      the logger's name
    service     users | feed | notifications | gateway
    pid         the process id
    request_id  the request's X-Request-ID (or the event's), "-" outside a request
    trace_id, span_id   hex, in every line written inside a span (tracing on: shared.tracing)
    msg         the message
    ...         the record's extras, then `exc` with a traceback
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

from shared import tracing

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "pid": os.getpid(),
            "request_id": getattr(record, "request_id", "-"),
        }
        ids = tracing.current_ids()
        if ids is not None:
            payload["trace_id"], payload["span_id"] = ids
        payload["msg"] = record.getMessage()
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


# Celery's line for every task that succeeded (celery.app.trace.LOG_SUCCESS)
_TASK_SUCCEEDED = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"


class TaskSucceededFilter(logging.Filter):
    """Drops Celery's INFO line for every task that succeeded: the task logs its own outcome (an
    event's `event applied`/`duplicate`, a fan-out page's `fanout-phase deliver`), so it was a
    second line per message. Retries, failures and everything else of celery.app.trace stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _TASK_SUCCEEDED


def logging_config(service: str, level: str = "INFO") -> dict:
    # Celery's per-message INFO lines (received, succeeded) only at DEBUG: one line per event is the
    # handler's own; at INFO they were two JSON lines more per message in the worker's CPU
    per_task = level if level.upper() == "DEBUG" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "shared.requestid.RequestIdFilter"},
            "task_succeeded": {"()": "shared.jsonlog.TaskSucceededFilter"},
        },
        "formatters": {"json": {"()": "shared.jsonlog.JsonFormatter", "service": service}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "django.request": {"level": "ERROR"},
            "celery": {"level": level},
            "celery.worker.strategy": {"level": per_task},  # "Task … received"
            "celery.app.trace": {"level": level, "filters": [] if per_task == level else ["task_succeeded"]},
        },
    }
