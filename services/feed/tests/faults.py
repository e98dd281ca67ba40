"""Fault injection for tests, loaded only through tests/fault_settings.py into a real feed process.

`X-Test-Fault: kill-after-commit` on a request: when the transaction that inserts the post
commits, the worker SIGKILLs itself (a `transaction.on_commit` callback registered while the
INSERT runs), before anything else the request would do after that commit.
"""

import os
import signal

from django.db import connection, transaction


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterCommitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.headers.get("X-Test-Fault") != "kill-after-commit":
            return self.get_response(request)
        armed = []

        def watch(execute, sql, params, many, context):
            if not armed and sql.startswith('INSERT INTO "posts_post"') and connection.in_atomic_block:
                armed.append(True)
                transaction.on_commit(_kill)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(watch):
            return self.get_response(request)
