"""Feed benchmark (not a test; prints figures): home-timeline reads at 1× and 10× data, the
monolith's pull-model SQL on the same data, and fan-out time for a post by a 100k-follower author.

    python bench/feed_bench.py                       # 100k users / 1M posts, then 10×
    python bench/feed_bench.py --users 10000 --posts 100000 --factors 1,10   # a quicker run
    python bench/feed_bench.py --fanout-only --fanout-runs 3                  # fan-out mode: 100k followers

Fan-out mode skips the read benchmarks; it posts as the 100k-follower author --fanout-runs times
(the median is the figure) and prints, per post, the end-to-end time and its phases from the feed worker's `fanout-phase`
log lines (follower page fetch, queue wait, Postgres insert, Redis write).

Each scale gets its own embedded Postgres + Redis, data from bench/feed_datagen.py, the users
and feed services under gunicorn (gthread, as in production), a feed Celery worker, and the
pull-model app. Load: wrk with a Lua script rotating the access tokens of READERS users.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt
import psycopg2
import redis
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "dev"), str(ROOT / "bench")]
import feed_datagen  # noqa: E402
import infra  # noqa: E402
import stack  # noqa: E402
import wrk  # noqa: E402

READERS = 500
PYTHON = sys.executable


def tokens_for(key_file: Path, user_ids: list[int]) -> list[str]:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    now = int(time.time())
    return [jwt.encode({"iss": "social-users", "aud": "social-api", "sub": str(u), "username": f"user{u}",
                        "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex}, key, algorithm="EdDSA",
                       headers={"kid": "dev", "typ": "at+jwt"}) for u in user_ids]


def rotating_lua(path: str, items: list[str], *, header: bool) -> str:
    table = ",".join(json.dumps(i) for i in items)
    if header:
        build = f'wrk.format("GET", "{path}", {{["Authorization"] = "Bearer " .. items[i]}})'
    else:
        build = f'wrk.format("GET", "{path}" .. items[i])'
    return f"""
items = {{{table}}}
counter = 0
request = function()
  counter = counter + 1
  local i = (counter % #items) + 1
  return {build}
end
"""


def run_scale(factor: int, args) -> dict:
    users, posts = args.users * factor, args.posts * factor
    print(f"\n== {factor}×: {users:,} users, {posts:,} posts ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)
        from shared.db_bootstrap import bootstrap

        with infra.embedded(run_dir) as (admin_url, redis_url):
            urls = bootstrap(admin_url, "social_bench", {n: f"{n}-bench" for n in stack.SERVICES})
            ctx = stack.Context(admin_database_url=admin_url, redis_url=redis_url, service_database_urls=urls,
                                run_dir=run_dir, replicas=1, port_offset=60,
                                extra_env={"FANOUT_MAX_FOLLOWERS": str(args.big_threshold), "GUNICORN_WORKERS": "2",
                                           "SLOW_REQUEST_MS": "100000", "SLOW_QUERY_MS": "100000"})
            stack.prepare(ctx, ["users", "feed"])
            feed_redis = redis_url
            generated = feed_datagen.generate(
                users=users, posts=posts, users_db=urls["users"], feed_db=urls["feed"], redis_url=feed_redis,
                celebrity_followers=min(args.celebrity_followers, users - 1), timeline_rows=None,
                big_threshold=args.big_threshold, log=lambda m: print(m, flush=True))
            pull_port = ctx.port("feed", 9)
            pull = stack.Proc(name="pull", cwd=ROOT / "bench", cmd=[
                PYTHON, "-m", "gunicorn", "-c", "python:shared.gunicorn_conf", "feed_pull_app:application"],
                env={**os.environ, "BIND": f"127.0.0.1:{pull_port}", "PULL_DATABASE_URL": admin_url.rsplit("/", 1)[0]
                     + "/social_bench", "GUNICORN_WORKERS": "2"})
            procs = [stack.gunicorn(ctx, "users", 0), stack.gunicorn(ctx, "feed", 0), pull,
                     *[p for p in stack.background_processes(ctx, "feed") if p.name in ("feed-worker", "feed-relay")]]
            supervisor = stack.Supervisor(procs, stream_logs=False, log_dir=run_dir)
            try:
                supervisor.start_all()
                supervisor.wait_ready(timeout=120)
                time.sleep(1)
                rng = __import__("random").Random(1)
                following = generated["following"]
                readers = [u for u in rng.sample(range(2, users + 1), min(READERS * 3, users - 1))
                           if following[u]][:READERS]
                tokens = tokens_for(run_dir / "keys" / "users-dev.pem", readers)
                feed_url = ctx.service_urls("feed")[0]
                result = {"factor": factor}
                if args.fanout_only:
                    result["fanout_runs"] = [
                        fanout_seconds(feed_url, urls["feed"], redis_url, run_dir, generated["followers_count"][1])
                        for _ in range(args.fanout_runs)]
                    result["fanout"] = sorted(result["fanout_runs"])[len(result["fanout_runs"]) // 2]
                    return result
                with httpx.Client(timeout=30) as client:  # warm: profile cache, connections
                    for token in tokens:
                        r = client.get(feed_url + "/api/v1/feed", headers={"Authorization": f"Bearer {token}"})
                        r.raise_for_status()
                result["feed"] = wrk.run(f"feed GET /feed ({factor}×)", feed_url, lua=rotating_lua(
                    "/api/v1/feed", tokens, header=True), seconds=args.seconds, connections=args.connections)
                result["pull"] = wrk.run(f"pull SQL ({factor}×)", f"http://127.0.0.1:{pull_port}", lua=rotating_lua(
                    "/?limit=20&user=", [str(u) for u in readers], header=False), seconds=args.seconds,
                    connections=args.connections)
                for key in ("feed", "pull"):
                    print(result[key].row(), flush=True)
                if factor == 1:
                    result["fanout"] = fanout_seconds(feed_url, urls["feed"], redis_url, run_dir,
                                                      generated["followers_count"][1])
                return result
            finally:
                supervisor.stop_all()


def fanout_seconds(feed_url: str, feed_db: str, redis_url: str, run_dir: Path, followers: int) -> float:
    token = tokens_for(run_dir / "keys" / "users-dev.pem", [1])[0]
    conn = psycopg2.connect(feed_db)
    conn.autocommit = True
    rd = redis.Redis.from_url(redis_url)
    started, started_at = time.monotonic(), time.time()
    response = httpx.post(feed_url + "/api/v1/posts", json={"body": "hello, everyone"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    post_id = int(response.json()["id"])
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM timelines_timelineentry WHERE post_id = %s", [post_id])
            done = cur.fetchone()[0]
        if done >= followers + 1:
            break
        if time.monotonic() - started > 120:
            print(f"fan-out incomplete after 120 s: {done:,} of {followers + 1:,}")
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    with conn.cursor() as cur:
        cur.execute("SELECT user_id FROM timelines_timelineentry WHERE post_id = %s", [post_id])
        readers = [row[0] for row in cur.fetchall()]
    time.sleep(0.5)  # the last page's Redis write follows its Postgres commit
    pipe = rd.pipeline(transaction=False)
    for reader in readers:
        pipe.exists(f"tl:{reader}")
        pipe.zscore(f"tl:{reader}", str(post_id))
    answers = pipe.execute()
    built = sum(1 for i in range(0, len(answers), 2) if answers[i])
    written = sum(1 for i in range(0, len(answers), 2) if answers[i] and answers[i + 1] is not None)
    print(f"fan-out: post by an author with {followers:,} followers in all {len(readers):,} timelines (Postgres) "
          f"after {elapsed:.2f} s; in Redis: {written:,} of {built:,} built timelines", flush=True)
    print_phases(run_dir / "feed-worker.log", post_id, started_at)
    return elapsed


def print_phases(log_file: Path, post_id: int, started_at: float) -> None:
    """Phase breakdown of one fan-out from the worker's `fanout-phase` lines (key=value)."""
    walk, deliveries = None, []
    for line in log_file.read_text(errors="replace").splitlines():
        if "fanout-phase" not in line or f"post={post_id} " not in line:
            continue
        fields = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line.split("fanout-phase", 1)[1])}
        if "fanout-phase walk " in line:
            walk = fields
        else:
            deliveries.append(fields)
    if walk is None or not deliveries:
        print("  phases: no fanout-phase lines in the worker log", flush=True)
        return
    walk_start = walk["end"] - walk["total"]
    pages = [d for d in deliveries if d["n"] > 1] or deliveries
    total = sum(d["n"] for d in pages)

    def stat(key):
        values = [d[key] for d in pages]
        return f"sum {sum(values):.2f} s, max {max(values):.3f} s"

    last = max(d["end"] for d in deliveries)
    print(f"  phases: POST → handler's page walk starts {walk_start - started_at:.2f} s; walk of {walk['pages']:.0f} "
          f"pages {walk['total']:.2f} s (waiting on follower page fetches {walk['fetch']:.2f} s); last delivery done at "
          f"{last - started_at:.2f} s\n"
          f"  {len(pages)} deliveries, {total:,.0f} rows: queue wait {stat('wait')}; Postgres insert {stat('pg')} "
          f"({total / max(sum(d['pg'] for d in pages), 1e-9):,.0f} rows/s per process); Redis {stat('redis')}; "
          f"lock {stat('lock')}; commit {stat('commit')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--factors", default="1,10")
    parser.add_argument("--celebrity-followers", type=int, default=100_000)
    parser.add_argument("--big-threshold", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--fanout-only", action="store_true", help="only the fan-out (factor 1, no wrk)")
    parser.add_argument("--fanout-runs", type=int, default=1, help="posts by the big author (best is reported)")
    parser.add_argument("--worker-concurrency", type=int, help="feed worker processes (default: dev/stack.py's)")
    args = parser.parse_args()
    if args.worker_concurrency:
        stack.WORKER_CONCURRENCY["feed"] = args.worker_concurrency
    if args.fanout_only:
        args.factors = "1"
    else:
        wrk.require_wrk()
    results = [run_scale(int(f), args) for f in args.factors.split(",")]
    print(f"\nfeed benchmark, wrk -t2 -c{args.connections} -d{args.seconds}s, {os.cpu_count()} cores, "
          "load generator on the same machine")
    for r in results:
        if "feed" not in r:
            continue
        print(r["feed"].row())
        print(r["pull"].row())
        print(f"  feed vs pull at {r['factor']}×: {r['feed'].rps / r['pull'].rps:.2f}× req/s, "
              f"p99 {r['feed'].p99_ms / r['pull'].p99_ms:.2f}× of pull's")
    if len(results) > 1 and not args.fanout_only:
        base, big = results[0]["feed"], results[-1]["feed"]
        print(f"feed read at {results[-1]['factor']}× vs 1×: p50 {big.p50_ms / base.p50_ms:.2f}×, "
              f"p99 {big.p99_ms / base.p99_ms:.2f}×, req/s {big.rps / base.rps:.2f}×")
    if "fanout" in results[0]:
        runs = results[0].get("fanout_runs", [results[0]["fanout"]])
        print(f"fan-out to {args.celebrity_followers:,} followers: {results[0]['fanout']:.2f} s (median of "
              f"{', '.join(f'{r:.2f}' for r in runs)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
