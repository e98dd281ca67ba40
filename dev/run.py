"""`make run`: the whole system on this machine, stopped cleanly by Ctrl-C.

Embedded Postgres (127.0.0.1:15432) and Redis (127.0.0.1:16379) under .run/ unless
DATABASE_URL (an admin URL: it creates the database, roles and schemas) or REDIS_URL are set;
then keys, migrations, every process of dev/stack.py's plan, a status table and prefixed logs.
A process that exits on its own is restarted after a backoff (1 s, doubling up to 30 s while it keeps
dying within 30 s of its start); each exit and restart is printed, the status table (printed again
after each restart, and on SIGUSR1) counts restarts and shows the last exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra
import stack

DATABASE = "social"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", "2")))
    parser.add_argument("--quiet", action="store_true", help="do not stream process logs (they go to .run/logs)")
    args = parser.parse_args(argv)

    from shared.db_bootstrap import bootstrap

    run_dir = stack.ROOT / ".run"
    run_dir.mkdir(exist_ok=True)
    os.chmod(run_dir, 0o755)
    log_dir = run_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    with (
        open(log_dir / "infra.log", "a") as infra_log,
        infra.embedded(run_dir, pg_port=15432, redis_port=16379, log=infra_log, announce=True) as (admin_url, redis_url),
    ):
        urls = bootstrap(admin_url, DATABASE, {name: f"{name}-dev-password" for name in stack.SERVICES})
        ctx = stack.Context(
            admin_database_url=admin_url, redis_url=redis_url, service_database_urls=urls, run_dir=run_dir, replicas=args.replicas
        )
        print("==> applying migrations (first run: about 20 s; later runs: nothing to apply)", flush=True)
        stack.prepare(ctx)
        supervisor: stack.Supervisor

        def on_event(proc: stack.Proc, message: str) -> None:
            print(f"==> {proc.name} {message}", flush=True)
            if message.startswith("restarted"):
                threading.Thread(target=show_when_ready, args=(proc,), daemon=True).start()

        def show_when_ready(proc: stack.Proc) -> None:
            try:
                supervisor.wait_ready(timeout=90, procs=[proc])
            except (RuntimeError, TimeoutError) as exc:
                print(f"==> {proc.name}: {exc}", flush=True)
            print("\n" + supervisor.status_table() + "\n", flush=True)

        supervisor = stack.Supervisor(
            stack.plan(ctx), stream_logs=not args.quiet, log_dir=log_dir, restart=True, on_event=on_event
        )
        signal.signal(signal.SIGUSR1, lambda *_: print("\n" + supervisor.status_table() + "\n", flush=True))
        try:
            supervisor.start_all()
            supervisor.wait_ready(timeout=90)
            edge = next((p for p in supervisor.procs if p.name == "gateway"), None)
            print("\n" + supervisor.status_table(), flush=True)
            print(f"\nPostgres {admin_url.rsplit('@', 1)[-1]}  Redis {redis_url}", flush=True)
            entry = edge.url if edge else ctx.service_urls("users")[0]
            print(f"API: {entry}/api/v1/   (Ctrl-C stops everything)\n", flush=True)
            while True:
                signal.pause()
        except KeyboardInterrupt:
            print("\nstopping…", flush=True)
        finally:
            supervisor.stop_all()
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except infra.InfraError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        sys.exit(1)
