"""Start one tree's whole system for bench/mix_bench.py and keep it up until stdin closes.

    <tree>/.venv/bin/python bench/mix_driver.py TREE PORT_OFFSET REPLICAS EXTRA_ENV_JSON

Runs with the measured tree's own python and imports that tree's dev/stack.py (Context,
temporary_system, plan, Supervisor), so a baseline commit is started exactly as its own `make run`
would start it (on shifted ports, with throwaway embedded Postgres + Redis). Prints one JSON line
(`MIX-READY {...}`: process name → pid, URLs, run directory) once every process is ready, then
waits; EOF on stdin or SIGTERM stops everything. Only the standard library and that tree's stack.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    tree, offset, replicas, extra = Path(sys.argv[1]).resolve(), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    for var in ("DATABASE_URL", "REDIS_URL"):  # always throwaway embedded servers, never someone's own
        os.environ.pop(var, None)
    sys.path[:0] = [str(tree / "dev"), str(tree)]
    import stack

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with stack.temporary_system(
        "bench-mix-", services=stack.available_services(), port_offset=offset, replicas=replicas, extra_env=json.loads(extra)
    ) as ctx:
        supervisor = stack.Supervisor(stack.plan(ctx), stream_logs=False, log_dir=ctx.run_dir)
        try:
            supervisor.start_all()
            supervisor.wait_ready(timeout=300)
            info = {
                # p.popen, not p.process(): this runs against older trees' stack.py too (a baseline)
                "pids": {p.name: p.popen.pid for p in supervisor.procs if p.popen is not None},
                "gateway": f"http://127.0.0.1:{ctx.gateway_port}",
                "services": {name: ctx.service_urls(name) for name in stack.available_services()},
                "redis_url": ctx.redis_url,
                "database_urls": ctx.service_database_urls,
                "run_dir": str(ctx.run_dir),
                "driver": os.getpid(),
            }
            print("MIX-READY " + json.dumps(info), flush=True)
            sys.stdin.read()  # until the benchmark closes our stdin (or exits)
        finally:
            supervisor.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
