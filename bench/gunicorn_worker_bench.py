"""gunicorn's gthread worker against shared.gunicorn_worker.LingerThreadWorker, on a trivial WSGI app.

    .venv/bin/python bench/gunicorn_worker_bench.py [--rounds 3] [--seconds 8] [--connections 4] [--threads 4]

One gunicorn process of each (one worker, `--threads`), the same app (a fixed 550-byte JSON
answer, so nearly all the CPU is the server's), `wrk` with kept-alive connections, rounds
alternating between the two. Prints req/s, p50/p99 and the worker process's CPU µs per request
(user + system from /proc/<pid>/stat) per round, their medians and the ratios LingerThreadWorker /
gthread. Everything runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wrk

from shared.testing import start_gunicorn

ROOT = Path(__file__).resolve().parent.parent
APP = """
BODY = b'{"ok":true}' * 50

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
"""
WORKERS = {"gthread": "gthread", "linger": "shared.gunicorn_worker.LingerThreadWorker"}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start(kind: str, workdir: Path, threads: int) -> tuple[subprocess.Popen, int, int]:
    """gunicorn with that worker class on a kernel-chosen port: (process, port, worker pid)."""
    args = ["-k", WORKERS[kind], "--threads", str(threads), "--keep-alive", "75"]
    return start_gunicorn(workdir / kind, APP, args, name=kind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    wrk.require_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for kind in WORKERS:
            (workdir / kind).mkdir()
        servers = {kind: start(kind, workdir, args.threads) for kind in WORKERS}
        rows: dict[str, list[tuple[wrk.Result, float]]] = {kind: [] for kind in WORKERS}
        try:
            for i in range(args.rounds):
                for kind in WORKERS if i % 2 == 0 else reversed(WORKERS):
                    _, port, pid = servers[kind]
                    before = cpu_seconds(pid)
                    result = wrk.run(
                        kind, f"http://127.0.0.1:{port}/", threads=1, connections=args.connections, seconds=args.seconds
                    )
                    us = (cpu_seconds(pid) - before) / max(1, result.requests) * 1e6
                    rows[kind].append((result, us))
                    print(f"  {result.row()}   worker CPU {us:.0f} µs/request", flush=True)
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
            for proc, _, _ in servers.values():
                proc.wait(timeout=30)
    print(f"\nwrk -c{args.connections} -d{args.seconds}s × {args.rounds}, one worker with {args.threads} threads (medians)")
    med = {}
    for kind, rs in rows.items():
        med[kind] = (statistics.median(r.rps for r, _ in rs), statistics.median(us for _, us in rs))
        print(f"{kind:8} {med[kind][0]:>8.0f} req/s   worker CPU {med[kind][1]:>5.0f} µs/request")
    print(
        f"linger / gthread: req/s {med['linger'][0] / med['gthread'][0]:.2f}×, "
        f"CPU per request {med['linger'][1] / med['gthread'][1]:.2f}×"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
