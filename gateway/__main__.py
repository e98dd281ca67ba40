"""`python -m gateway`: one process (default) or a master with GATEWAY_WORKERS workers."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile


def main(argv: list[str]) -> int:
    from . import config, logs

    logs.setup()
    try:
        settings = config.load()
    except config.ConfigError as exc:
        sys.stderr.write(f"gateway: configuration error: {exc}\n")
        return 2
    if "--worker" in argv:
        from .server import run_worker

        return run_worker(settings, serve_admin=False, reuse_port=True)
    if settings.workers == 1:
        from .server import run_worker

        return run_worker(settings, serve_admin=True, reuse_port=False)
    # prometheus_client reads this at import time, in the master and in every worker
    tmp = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
    try:
        from .server import run_master

        return run_master(settings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
