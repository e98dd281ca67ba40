"""`make bench`: every benchmark in turn, each printing its figures and ratios against a peer
measured in the same run. Not tests: nothing here passes or fails on speed.

    python bench/run_all.py               # all
    python bench/run_all.py users gateway # some
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {  # name → script and arguments; each starts what it measures and stops it
    "users": ["users_bench.py"],
    "gateway": ["gateway_bench.py", "--both"],  # trivial upstream and the real users service: both ratios
    "gateway-features": ["gateway_bench.py", "--features"],  # token verification + rate limits on every peer
    "feed": ["feed_bench.py"],
    "events": ["events_bench.py"],
    "gunicorn-worker": ["gunicorn_worker_bench.py"],  # shared.gunicorn_worker against plain gthread
    "mix": ["mix_bench.py"],  # the social-network mix through the gateway, HEAD vs the baseline commit
}


def main(argv: list[str]) -> int:
    selected = argv or list(BENCHMARKS)
    failed = []
    for name in selected:
        script_name, *args = BENCHMARKS[name]
        script = HERE / script_name
        if not script.exists():
            print(f"--- {name}: {script.name} not present, skipped")
            continue
        print(f"\n=== benchmark: {name} ===", flush=True)
        if subprocess.call([sys.executable, str(script), *args]) != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that did not complete: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
