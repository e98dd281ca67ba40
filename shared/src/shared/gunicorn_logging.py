"""gunicorn's logger without the access log (shared.gunicorn_conf: `logger_class`).

The services never write an access log (the gateway does), but gunicorn formats every request's
line (atoms, dates, headers) whenever `logconfig_dict` is set, which it is so that gunicorn's own
lines use the JSON log schema. Its error log is unchanged.
"""

from __future__ import annotations

from gunicorn.glogging import Logger


class NoAccessLogger(Logger):
    def _compute_access_log_enabled(self) -> bool:
        return False

    def access(self, resp, req, environ, request_time) -> None:
        return None
