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


def logging_config(service: str, level: str = "INFO") -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "shared.requestid.RequestIdFilter"}},
        "formatters": {"json": {"()": "shared.jsonlog.JsonFormatter", "service": service}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "django.request": {"level": "ERROR"},
            "celery": {"level": level},
        },
    }
