"""Event backbone benchmark: event → notification visible through the notifications API.

Starts embedded Postgres + Redis and real processes (users gunicorn + users outbox relay,
notifications gunicorn + notifications Celery worker, as `make run` configures them), then:

* drives `user.followed` events at a steady rate by committing rows to the users service's
  **outbox directly** (one transaction per event, the same INSERT + NOTIFY `publish()` does), so
  the rate is exact and the users API's own cost is left out (bench/users_bench.py measures it);
* measures, per event, commit → the notification visible through notifications' API: every 50 ms
  one event goes to a "probe" recipient (a registered user with a token) whose
  `GET /api/v1/notifications/unread-count` is polled every 10 ms (at most ~100 polls/s in all)
  until it shows the event; the
  other events go to one busy recipient. Also reported for *every* event: commit → handler
  start (the inbox row's `handled_at`), read from the notifications database;
* ramps the rate until the backlog (committed − handled) grows: the maximum sustained events/s.

Not a test: it prints figures; machines differ (this one: 2 shared cores, everything on them).

    .venv/bin/python bench/events_bench.py [--rate 200] [--seconds 15] [--no-ramp]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "dev"), str(ROOT / "shared" / "src")]
import infra  # noqa: E402
import stack  # noqa: E402

DATABASE = "social_bench_events"
PASSWORD = "correct horse battery staple"
PROBE_USERS = 16
PROBE_EVERY = 0.05  # s between probe events
POLL = 0.01  # s between unread-count polls of a pending probe
STAR_ID = 2_000_000_000  # the busy recipient (no account needed: handlers take ids)
PORT_OFFSET = 3000


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, users_db: str, notifications_db: str, notifications_url: str, probes: list[tuple[int, str]]):
        self.out = psycopg2.connect(users_db)
        self.out.autocommit = True
        self.inbox = psycopg2.connect(notifications_db)
        self.inbox.autocommit = True
        self.api = httpx.Client(base_url=notifications_url, timeout=5)
        self.probes = probes  # (user id, access token)
        self.expected = {uid: 0 for uid, _ in probes}
        self.follower = 1_000_000_000

    def commit_event(self, followee_id: int) -> tuple[str, float]:
        self.follower += 1
        event_id = str(uuid.uuid4())
        data = json.dumps({"follower_id": str(self.follower), "followee_id": str(followee_id)})
        with self.out.cursor() as cursor:
            cursor.execute(
                "WITH row AS (INSERT INTO events_outbox (event_id, type, version, occurred_at, data, request_id) "
                "VALUES (%s, 'user.followed', 1, clock_timestamp(), %s::jsonb, '') RETURNING seq) "
                "SELECT pg_notify('events_outbox_users', '') FROM row",
                [event_id, data],
            )
        return event_id, time.time()

    def handled(self) -> int:
        with self.inbox.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM events_inbox")
            return cursor.fetchone()[0]

    def handler_start_latencies(self, committed: dict[str, float]) -> list[float]:
        with self.inbox.cursor() as cursor:
            cursor.execute(
                "SELECT event_id::text, extract(epoch FROM handled_at) FROM events_inbox WHERE event_id = ANY(%s::uuid[])",
                [list(committed)],
            )
            return [float(at) - committed[eid] for eid, at in cursor.fetchall()]

    def run(self, rate: float, seconds: float) -> dict:
        """Commit `rate` events/s for `seconds`; returns latencies and backlog figures."""
        committed: dict[str, float] = {}
        pending: dict[int, tuple[float, int]] = {}  # probe user → (commit time, count to reach)
        visible: list[float] = []
        lock = threading.Lock()
        free = [uid for uid, _ in self.probes]
        tokens = dict(self.probes)
        done = threading.Event()
        skipped_probes = 0

        def poller() -> None:
            while not done.is_set() or pending:
                with lock:
                    items = list(pending.items())
                for uid, (at, want) in items:
                    response = self.api.get(
                        "/api/v1/notifications/unread-count", headers={"Authorization": f"Bearer {tokens[uid]}"}
                    )
                    if response.status_code == 200 and response.json()["count"] >= want:
                        seen = time.time()
                        with lock:
                            visible.append(seen - at)
                            del pending[uid]
                            free.append(uid)
                if done.is_set() and pending and time.time() - min(at for at, _ in pending.values()) > 30:
                    break
                # at most ~100 polls/s in all, so measuring does not steal the CPU it measures
                time.sleep(max(POLL, 0.01 * len(items)))

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        start = time.monotonic()
        base_handled = self.handled()
        next_probe = start
        n = 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            due = start + n / rate
            if due > now:
                time.sleep(due - now)
            probe = None
            if time.monotonic() >= next_probe:
                next_probe += PROBE_EVERY
                with lock:
                    probe = free.pop(0) if free else None
                if probe is None:
                    skipped_probes += 1
            event_id, at = self.commit_event(probe if probe is not None else STAR_ID)
            committed[event_id] = at
            if probe is not None:
                self.expected[probe] += 1
                with lock:
                    pending[probe] = (at, self.expected[probe])
            n += 1
        elapsed = time.monotonic() - start
        backlog_at_end = n - (self.handled() - base_handled)
        done.set()
        drain_start = time.monotonic()
        while self.handled() - base_handled < n and time.monotonic() - drain_start < 120:
            time.sleep(0.05)
        drained_in = time.monotonic() - drain_start
        thread.join(timeout=35)
        handler = self.handler_start_latencies(committed)
        return {
            "rate": rate,
            "sent": n,
            "achieved_rate": n / elapsed,
            "backlog_at_end": backlog_at_end,
            "drained_in_s": drained_in,
            "visible": visible,
            "handler_start": handler,
            "probes_skipped": skipped_probes,
            "lost": n - len(handler),
        }


def worker_breakdown(port: int) -> str:
    """Where a worker's time goes: its own /metrics (handler time vs. events handled)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("type") == "user.followed" and "le" not in s.labels
    }
    count = samples.get("events_handler_duration_seconds_count", 0)
    total = samples.get("events_handler_duration_seconds_sum", 0)
    return (
        f"worker /metrics: {count:.0f} user.followed events, mean handler time (inbox + notification + "
        f"delivery rows + commit) {1000 * total / max(count, 1):.1f} ms"
    )


def report(result: dict) -> str:
    v, h = result["visible"], result["handler_start"]
    ms = lambda s: f"{s * 1000:7.1f} ms"  # noqa: E731
    return (
        f"rate {result['rate']:6.0f}/s (achieved {result['achieved_rate']:6.1f}/s, {result['sent']} events): "
        f"API-visible p50 {ms(pct(v, 0.5))} p99 {ms(pct(v, 0.99))} max {ms(max(v) if v else float('nan'))} "
        f"[{len(v)} probes]; handler start p50 {ms(pct(h, 0.5))} p99 {ms(pct(h, 0.99))}; "
        f"backlog at end {result['backlog_at_end']}, drained in {result['drained_in_s']:.1f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-ramp", action="store_true")
    parser.add_argument("--ramp", default="300,400,500,600,800,1000,1300", help="events/s steps")
    parser.add_argument("--ramp-seconds", type=float, default=8.0)
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="run the notifications worker with the prefork pool of N processes (default: solo, as make run)",
    )
    args = parser.parse_args()

    from shared.db_bootstrap import bootstrap

    with tempfile.TemporaryDirectory(prefix="social-events-bench-") as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)
        with open(run_dir / "infra.log", "w") as log, infra.embedded(run_dir, log=log, ephemeral=True) as (admin_url, redis_url):
            urls = bootstrap(admin_url, DATABASE, {s: f"{s}-dev-password" for s in stack.SERVICES})
            ctx = stack.Context(
                admin_database_url=admin_url,
                redis_url=redis_url,
                service_database_urls=urls,
                run_dir=run_dir,
                replicas=1,
                port_offset=PORT_OFFSET,
                extra_env={"THROTTLE_REGISTER_IP": "1000/min", "LOG_LEVEL": "WARNING"},
            )
            stack.prepare(ctx, ["users", "notifications"])
            users_bg = {p.name: p for p in stack.background_processes(ctx, "users")}
            notif_bg = {p.name: p for p in stack.background_processes(ctx, "notifications")}
            metrics_port = infra.free_port()
            notif_bg["notifications-worker"].env["METRICS_PORT"] = str(metrics_port)
            if args.worker_concurrency:
                stack.with_prefork(notif_bg["notifications-worker"], args.worker_concurrency)
            procs = [
                stack.gunicorn(ctx, "users", 0),
                stack.gunicorn(ctx, "notifications", 0),
                users_bg["users-relay"],
                notif_bg["notifications-worker"],
            ]
            supervisor = stack.Supervisor(procs, stream_logs=False, log_dir=run_dir)
            try:
                supervisor.start_all()
                supervisor.wait_ready(timeout=90)
                probes = []
                with httpx.Client(base_url=ctx.service_urls("users")[0], timeout=30) as client:
                    for i in range(PROBE_USERS):
                        response = client.post(
                            "/api/v1/auth/register",
                            json={"username": f"probe{i}", "email": f"probe{i}@bench.example", "password": PASSWORD},
                        )
                        response.raise_for_status()
                        body = response.json()
                        token = body["access"]
                        me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
                        me.raise_for_status()
                        probes.append((int(me.json()["id"]), token))
                bench = Bench(urls["users"], urls["notifications"], ctx.service_urls("notifications")[0], probes)
                pool = stack.worker_pool(notif_bg["notifications-worker"])
                print(
                    f"events bench: events written to users' outbox directly (INSERT + NOTIFY, one transaction "
                    f"each); 1 users relay, 1 notifications worker ({pool}), "
                    f"{os.cpu_count()} CPU cores shared by all processes",
                    flush=True,
                )
                bench.run(50, 3)  # warm up: connections, imports, caches
                steady = bench.run(args.rate, args.seconds)
                print("steady  " + report(steady), flush=True)
                print(f"steady: events lost: {steady['lost']}", flush=True)
                max_sustained = args.rate if steady["backlog_at_end"] <= args.rate * 0.5 else None
                if not args.no_ramp and not max_sustained:  # find the highest rate it does keep up with
                    for rate in [r for r in (150.0, 100.0, 75.0, 50.0) if r < args.rate]:
                        result = bench.run(rate, args.ramp_seconds)
                        print("ramp    " + report(result), flush=True)
                        if result["backlog_at_end"] <= rate * 0.5:
                            max_sustained = rate
                            break
                elif not args.no_ramp:
                    for rate in [float(r) for r in args.ramp.split(",") if float(r) > args.rate]:
                        result = bench.run(rate, args.ramp_seconds)
                        print("ramp    " + report(result), flush=True)
                        if result["backlog_at_end"] > rate * 0.5 or result["achieved_rate"] < rate * 0.95:
                            break
                        max_sustained = rate
                print(
                    f"max sustained: {max_sustained or '< 50'} events/s "
                    "(highest step whose backlog stayed under half a second of events)",
                    flush=True,
                )
                print(worker_breakdown(metrics_port), flush=True)
            finally:
                supervisor.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
