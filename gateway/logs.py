"""JSON log lines on stderr, in the schema every process writes (shared/src/shared/jsonlog.py;
docs/operations.md#logs): ts (ISO 8601 UTC, ms), level, logger, service, pid, request_id, msg.
The access log is separate: one JSON line per request on stdout (proxy.Req._record), with
the same ts/level/logger/service/pid/request_id/msg fields, trace_id and span_id when traced, then
the request's own fields."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": "gateway",
            "pid": os.getpid(),
            "request_id": getattr(record, "request_id", "-"),
        }
        # a line written while a request is handled (proxy.Req.log_ids): its trace, as the access line
        for key in ("trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        payload["msg"] = record.getMessage()
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def setup() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("GATEWAY_LOG_LEVEL", "INFO").upper())
    logging.Formatter.converter = time.gmtime
