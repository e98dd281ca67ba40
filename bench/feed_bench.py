"""Feed benchmark (not a test; prints figures): home-timeline reads at 1× and 10× data, the
monolith's pull-model SQL on the same data, and fan-out time for a post by a 100k-follower author.

    python bench/feed_bench.py                       # 100k users / 1M posts and 1M / 10M, alternating rounds
    python bench/feed_bench.py --users 10000 --posts 100000 --factors 1,10   # a quicker run
    python bench/feed_bench.py --fanout-only --fanout-runs 3                  # fan-out mode: 10 / 1k / 100k followers

Every scale gets its own embedded Postgres + Redis, data from bench/feed_datagen.py, the users
and feed services under gunicorn (gthread, as in production), a feed Celery worker, and the
pull-model app, and **all scales stay up at once** (RAM permitting: 1M / 10M takes ~15 GB with its
generator). Once every scale's data is loaded and settled (no autovacuum, no AOF rewrite) and
warmed the same way, wrk runs every target (feed and pull at each scale) for --seconds in
--rounds alternating rounds (reversed order every other round, as bench/gateway_bench.py), so a
neighbour's burst on this shared machine lands on every scale alike; the medians per target and
their ratios are reported with `uptime` per round. Load: wrk with a Lua script rotating the
access tokens of READERS users.

Fan-out mode skips the read benchmarks; for each of --fanout-sizes (10, 1,000, 100,000 followers:
the generated author whose follower count is nearest, the 100k one being the celebrity) it posts as
that author --fanout-runs times and prints, per post, the end-to-end time, the CPU it cost per
follower (the feed worker's process tree, and the users service's gunicorn answering the follower
pages, from /proc until the worker is idle again), which path ran (fan-out in the post.created
handler, a task per page, or none for a big author merged at read), and the phases from the feed
worker's `fanout-phase` log lines (follower page fetch, queue wait, Postgres insert, Redis write).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import psycopg2
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    if not isinstance(key, Ed25519PrivateKey):  # the dev key signs EdDSA tokens
        raise SystemExit(f"expected an Ed25519 key, found {type(key).__name__}")
    now = int(time.time())
    return [
        jwt.encode(
            {
                "iss": "social-users",
                "aud": "social-api",
                "sub": str(u),
                "username": f"user{u}",
                "iat": now,
                "exp": now + 3600,
                "jti": uuid.uuid4().hex,
            },
            key,
            algorithm="EdDSA",
            headers={"kid": "dev", "typ": "at+jwt"},
        )
        for u in user_ids
    ]


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


@dataclass
class Scale:
    """One data size with its whole stack up: embedded Postgres + Redis, users, feed, worker, pull app."""

    factor: int
    users: int
    posts: int
    feed_url: str
    pull_url: str
    feed_db: str
    users_db: str
    admin_url: str
    redis_url: str
    run_dir: Path
    readers: list[int]
    tokens: list[str]
    celebrity_followers: int
    big_authors: int
    big_readers: int
    datagen_seconds: float
    feed_pids: list[int]
    worker_pid: int
    users_pid: int
    fanout_authors: dict[int, tuple[int, int]]  # wanted follower count → (author id, its followers)


def start_scale(factor: int, index: int, args, stack_: contextlib.ExitStack) -> Scale:
    """Generate the data for one scale and start its processes; everything stays up (and is torn
    down by stack_) so both scales can be measured in alternating rounds."""
    users, posts = args.users * factor, args.posts * factor
    print(f"\n== {factor}×: {users:,} users, {posts:,} posts ==", flush=True)
    run_dir = Path(stack_.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-feed-{factor}x-", dir=args.tmp)))
    os.chmod(run_dir, 0o755)
    from shared.db_bootstrap import bootstrap

    infra_log = stack_.enter_context(open(run_dir / "infra.log", "w"))  # noqa: SIM115 - closed by the ExitStack
    admin_url, redis_url = stack_.enter_context(infra.embedded(run_dir, log=infra_log, ephemeral=True))
    urls = bootstrap(admin_url, "social_bench", {n: f"{n}-bench" for n in stack.SERVICES})
    ctx = stack.Context(
        admin_database_url=admin_url,
        redis_url=redis_url,
        service_database_urls=urls,
        run_dir=run_dir,
        replicas=1,
        port_offset=60 + 2000 * index,
        extra_env={
            "FANOUT_MAX_FOLLOWERS": str(args.big_threshold),
            "GUNICORN_WORKERS": "2",
            "SLOW_REQUEST_MS": "100000",
            "SLOW_QUERY_MS": "100000",
        },
    )
    stack.prepare(ctx, ["users", "feed"])
    generated = feed_datagen.generate(
        users=users,
        posts=posts,
        users_db=urls["users"],
        feed_db=urls["feed"],
        redis_url=redis_url,
        celebrity_followers=min(args.celebrity_followers, users - 1),
        timeline_rows=None,
        big_threshold=args.big_threshold,
        log=lambda m: print(m, flush=True),
    )
    rng = random.Random(1)
    following, big = generated["following"], generated["big"]
    readers = [u for u in rng.sample(range(2, users + 1), min(READERS * 3, users - 1)) if following[u]][:READERS]
    big_readers = sum(1 for u in readers if big.intersection(following[u]))
    celebrity = generated["followers_count"][1]
    counts = generated["followers_count"]
    fanout_authors = {}
    for size in args.fanout_sizes:
        if size >= celebrity:
            fanout_authors[size] = (1, celebrity)
        else:
            nearest = min((abs(counts[a] - size), a) for a in range(2, users + 1))[1]
            fanout_authors[size] = (nearest, counts[nearest])
    datagen_seconds = generated["seconds"]
    del generated, following, counts  # the 10× graph is gigabytes of Python lists
    print(
        f"  readers: {len(readers)}, of which {big_readers} follow a big author (merged at read); "
        f"big authors: {len(big)}; author 1 has {celebrity:,} followers",
        flush=True,
    )
    pull_port = ctx.port("feed", 9)
    pull = stack.Proc(
        name="pull",
        cwd=ROOT / "bench",
        cmd=[PYTHON, "-m", "gunicorn", "-c", "python:shared.gunicorn_conf", "feed_pull_app:application"],
        env={
            **os.environ,
            "BIND": f"127.0.0.1:{pull_port}",
            "PULL_DATABASE_URL": admin_url.rsplit("/", 1)[0] + "/social_bench",
            "GUNICORN_WORKERS": "2",
        },
    )
    procs = [
        stack.gunicorn(ctx, "users", 0),
        stack.gunicorn(ctx, "feed", 0),
        pull,
        *[p for p in stack.background_processes(ctx, "feed") if p.name in ("feed-worker", "feed-relay")],
    ]
    if args.worker_concurrency:
        stack.with_prefork(next(p for p in procs if p.name == "feed-worker"), args.worker_concurrency)
    supervisor = stack.Supervisor(procs, stream_logs=False, log_dir=run_dir)
    stack_.callback(supervisor.stop_all)
    supervisor.start_all()
    supervisor.wait_ready(timeout=180)
    time.sleep(1)
    tokens = tokens_for(run_dir / "keys" / "users-dev.pem", readers)
    return Scale(
        factor=factor,
        users=users,
        posts=posts,
        feed_url=ctx.service_urls("feed")[0],
        pull_url=f"http://127.0.0.1:{pull_port}",
        feed_db=urls["feed"],
        users_db=urls["users"],
        admin_url=admin_url,
        redis_url=redis_url,
        run_dir=run_dir,
        readers=readers,
        tokens=tokens,
        celebrity_followers=celebrity,
        big_authors=len(big),
        big_readers=big_readers,
        datagen_seconds=datagen_seconds,
        feed_pids=[procs[1].process().pid],
        worker_pid=procs[3].process().pid,
        users_pid=procs[0].process().pid,
        fanout_authors=fanout_authors,
    )


def settle(scale: Scale, timeout: float = 600) -> None:
    """Wait until the data load's background work is over, so it does not land in one scale's
    rounds: Postgres autovacuum of the freshly loaded tables, a Redis AOF rewrite."""
    started = time.monotonic()
    rd = redis.Redis.from_url(scale.redis_url)
    conn = psycopg2.connect(scale.admin_url)
    conn.autocommit = True
    try:
        while time.monotonic() - started < timeout:
            persistence = rd.info("persistence")
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
                vacuums = cur.fetchone()[0]
            if not persistence.get("aof_rewrite_in_progress") and not persistence.get("rdb_bgsave_in_progress") and not vacuums:
                break
            time.sleep(2)
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    finally:
        conn.close()
    print(f"  {scale.factor}×: settled after {time.monotonic() - started:.0f} s", flush=True)


def warm(scale: Scale, args) -> None:
    """The same warm-up for every scale: every reader's first page once through the feed (profile
    cache, post cache, Postgres buffers of the indexes it touches) and the pull app, then a short
    wrk run of each."""
    started = time.monotonic()
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16)) as client, ThreadPoolExecutor(max_workers=16) as pool:

        def both(reader: int, token: str) -> None:
            client.get(scale.feed_url + "/api/v1/feed", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            pulled = client.get(f"{scale.pull_url}/?limit=20&user={reader}")
            if pulled.status_code not in (200, 503):  # 503: over the pull app's statement timeout
                pulled.raise_for_status()

        list(pool.map(both, scale.readers, scale.tokens))
    print(f"  {scale.factor}×: every reader's page read once in {time.monotonic() - started:.0f} s", flush=True)
    for name, url, lua in targets_of(scale):
        wrk.run(name, url, lua=lua, seconds=args.warmup, connections=args.connections)
        quiesce([scale])


def targets_of(scale: Scale) -> list[tuple[str, str, str]]:
    return [
        (f"feed {scale.factor}×", scale.feed_url, rotating_lua("/api/v1/feed", scale.tokens, header=True)),
        (
            f"pull {scale.factor}×",
            scale.pull_url,
            rotating_lua("/?limit=20&user=", [str(u) for u in scale.readers], header=False),
        ),
    ]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def median(values: list[float]) -> float:
    return statistics.median(values)


def quiesce(scales: list[Scale], timeout: float = 60) -> float:
    """Wait until no scale's Postgres runs a query older than 100 ms (a slow pull query the load
    generator abandoned at its timeout), so one target's leftovers do not land in the next
    target's round. Returns the seconds waited."""
    started = time.monotonic()
    for scale in scales:
        conn = psycopg2.connect(scale.admin_url)
        conn.autocommit = True
        try:
            while time.monotonic() - started < timeout:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend' AND now() - query_start > interval '100 ms'"
                    )
                    if not cur.fetchone()[0]:
                        break
                time.sleep(0.2)
        finally:
            conn.close()
    return time.monotonic() - started


def measure(scales: list[Scale], args) -> dict[str, list[wrk.Result]]:
    """Alternating rounds (as bench/gateway_bench.py): every round runs every target once, in the
    reverse order every other round, so a neighbour's burst lands on all scales alike."""
    targets = [t for scale in scales for t in targets_of(scale)]
    targets = [t for t in targets if t[0].startswith("feed")] + [t for t in targets if t[0].startswith("pull")]
    runs: dict[str, list[wrk.Result]] = {name: [] for name, _, _ in targets}
    for i in range(args.rounds):
        order = targets if i % 2 == 0 else list(reversed(targets))
        for name, url, lua in order:
            waited = quiesce(scales)
            result = wrk.run(name, url, lua=lua, seconds=args.seconds, connections=args.connections)
            runs[name].append(result)
            print(
                f"  round {i + 1}: {result.row()}" + (f" (after {waited:.1f} s of quiescing)" if waited > 1 else ""), flush=True
            )
        print(f"  round {i + 1} done; {uptime()}", flush=True)
    return runs


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, reaped children's included) of a process and its descendants."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    pending += [int(c) for c in fh.read().split()]
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def quiet(pid: int, timeout: float = 60) -> None:
    """Until the process tree used under 2 % of a core over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu(pid)
        time.sleep(0.5)
        if tree_cpu(pid) - before < 0.01:
            return


def fanout_cost(scale: Scale, size: int, args) -> tuple[float, float, int, str]:
    """Posts by the author nearest `size` followers: (median seconds until every follower's row is
    in Postgres, CPU µs per follower of the feed worker + users gunicorn over all of them, counted
    until the worker is idle again, posts, the path that ran). Small authors post at least 20 times:
    /proc counts CPU in 10 ms ticks."""
    author, followers = scale.fanout_authors[size]
    posts = args.fanout_runs if followers >= 10_000 else max(args.fanout_runs, 20)
    expect = 0 if followers > args.big_threshold else followers
    quiet(scale.worker_pid)
    cpu0 = tree_cpu(scale.worker_pid), tree_cpu(scale.users_pid)
    walls: list[float] = []
    deliveries: list = []
    for _ in range(posts):
        elapsed, deliveries = fanout_seconds(
            scale.feed_url, scale.feed_db, scale.redis_url, scale.run_dir, expect, author=author, verbose=followers >= 10_000
        )
        walls.append(elapsed)
    quiet(scale.worker_pid)
    worker, users = tree_cpu(scale.worker_pid) - cpu0[0], tree_cpu(scale.users_pid) - cpu0[1]
    if followers > args.big_threshold:
        path = "big author: pulled at read, no fan-out"
    elif len(deliveries) == 1:  # the author and every follower in one delivery, in the handler
        path = "fan-out in the post.created handler"
    else:
        path = f"fan-out, {len(deliveries) - 1} feed.fanout_deliver task(s) per post"
    per = (worker + users) * 1e6 / posts / max(1, followers)
    print(
        f"  {followers:,} followers (author {author}; {path}): {posts} posts, median {median(walls):.3f} s, "
        f"CPU {per:.1f} µs per follower (per post: feed worker {worker * 1000 / posts:.1f} ms + users gunicorn "
        f"{users * 1000 / posts:.1f} ms); {uptime()}",
        flush=True,
    )
    return median(walls), per, posts, path


def fanout_seconds(
    feed_url: str, feed_db: str, redis_url: str, run_dir: Path, followers: int, author: int = 1, verbose: bool = True
) -> tuple[float, list[dict]]:
    """Post as the author; (seconds until `followers` + 1 timeline rows exist, the fanout-phase deliveries)."""
    token = tokens_for(run_dir / "keys" / "users-dev.pem", [author])[0]
    conn = psycopg2.connect(feed_db)
    conn.autocommit = True
    rd = redis.Redis.from_url(redis_url)
    started, started_at = time.monotonic(), time.time()
    response = httpx.post(
        feed_url + "/api/v1/posts", json={"body": "hello, everyone"}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
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
    if verbose:
        print(
            f"fan-out: post by an author with {followers:,} followers in all {len(readers):,} timelines (Postgres) "
            f"after {elapsed:.2f} s; in Redis: {written:,} of {built:,} built timelines",
            flush=True,
        )
    elif written != built:
        print(f"  fan-out: only {written:,} of {built:,} built Redis timelines got post {post_id}", flush=True)
    return elapsed, print_phases(run_dir / "feed-worker.log", post_id, started_at, verbose=verbose)


def print_phases(log_file: Path, post_id: int, started_at: float, verbose: bool = True) -> list[dict]:
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
    if not verbose:
        return deliveries
    if walk is None or not deliveries:
        print("  phases: no fanout-phase lines in the worker log", flush=True)
        return deliveries
    walk_start = walk["end"] - walk["total"]
    pages = [d for d in deliveries if d["n"] > 1] or deliveries
    total = sum(d["n"] for d in pages)

    def stat(key):
        values = [d[key] for d in pages]
        return f"sum {sum(values):.2f} s, max {max(values):.3f} s"

    last = max(d["end"] for d in deliveries)
    print(
        f"  phases: POST → handler's page walk starts {walk_start - started_at:.2f} s; walk of {walk['pages']:.0f} "
        f"pages {walk['total']:.2f} s (waiting on follower page fetches {walk['fetch']:.2f} s); last delivery done at "
        f"{last - started_at:.2f} s\n"
        f"  {len(pages)} deliveries, {total:,.0f} rows: queue wait {stat('wait')}; Postgres insert {stat('pg')} "
        f"({total / max(sum(d['pg'] for d in pages), 1e-9):,.0f} rows/s per process); Redis {stat('redis')}; "
        f"lock {stat('lock')}; commit {stat('commit')}",
        flush=True,
    )
    return deliveries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--factors", default="1,10")
    parser.add_argument("--celebrity-followers", type=int, default=100_000)
    parser.add_argument("--big-threshold", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10, help="per wrk round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of wrk per target before the rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tmp", help="where the scales' data directories go (default: the system's temp dir)")
    parser.add_argument("--skip-fanout", action="store_true", help="no fan-out measurement after the reads")
    parser.add_argument("--fanout-only", action="store_true", help="only the fan-out (factor 1, no wrk)")
    parser.add_argument("--fanout-runs", type=int, default=1, help="posts per author (median is reported)")
    parser.add_argument("--fanout-sizes", default="10,1000,100000", help="fan-out mode: follower counts to post as")
    parser.add_argument(
        "--worker-concurrency", type=int, help="the feed worker with the prefork pool of N processes (default: solo, as make run)"
    )
    args = parser.parse_args()
    args.fanout_sizes = [int(n) for n in args.fanout_sizes.split(",")]
    if args.fanout_only:
        args.factors = "1"
    else:
        wrk.require_wrk()
    factors = [int(f) for f in args.factors.split(",")]
    # stopped with SIGTERM (or SIGINT in a background job, where it is ignored): still tear the stacks down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"start: {uptime()}", flush=True)
    with contextlib.ExitStack() as stack_:
        scales = [start_scale(f, i, args, stack_) for i, f in enumerate(factors)]
        if args.fanout_only:
            scale = scales[0]
            fanout_seconds(scale.feed_url, scale.feed_db, scale.redis_url, scale.run_dir, 0, author=2, verbose=False)  # warm-up
            costs = {}
            for size in args.fanout_sizes:
                print(f"\nfan-out, author with ~{size:,} followers:", flush=True)
                costs[size] = fanout_cost(scale, size, args)
            pool = f"prefork -c {args.worker_concurrency}" if args.worker_concurrency else "solo"
            print(f"\nfan-out cost per follower (one feed worker, {pool}; users gunicorn answering the pages); {uptime()}")
            for size, (wall, per, posts, path) in costs.items():
                print(
                    f"{scale.fanout_authors[size][1]:>8,} followers: CPU {per:.1f} µs per follower (feed worker + users), "
                    f"wall {wall:.3f} s (median of {posts} posts); {path}"
                )
            return 0
        for scale in scales:
            settle(scale)
        for scale in scales:
            warm(scale, args)
        print(f"warmed; feed gunicorn pids: {', '.join(f'{s.factor}×: {s.feed_pids}' for s in scales)}; {uptime()}", flush=True)
        before = uptime()
        runs = measure(scales, args)
        after = uptime()
        fanout = None
        if scales[0].celebrity_followers > args.big_threshold:
            print("fan-out not measured: author 1 is a big author at this size (its posts are merged at read)")
        elif not args.skip_fanout and factors[0] == 1:
            scale = scales[0]
            fanout, _ = fanout_seconds(scale.feed_url, scale.feed_db, scale.redis_url, scale.run_dir, scale.celebrity_followers)
        fanout_load = uptime()

    print(
        f"\nfeed benchmark, wrk -t2 -c{args.connections} -d{args.seconds}s × {args.rounds} alternating rounds "
        f"(medians per target), {os.cpu_count()} cores, load generator on the same machine"
    )
    print(f"load before the rounds: {before}\nload after the rounds:  {after}")
    for scale in scales:
        print(
            f"{scale.factor}×: {scale.users:,} users, {scale.posts:,} posts, data generated in "
            f"{scale.datagen_seconds:.0f} s; {scale.big_authors} big author(s); {scale.big_readers} of "
            f"{len(scale.readers)} readers follow one (their pages merge it at read)"
        )
    med = {}
    print(f"{'target':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  rounds (req/s / p99 ms)")
    for name, results in runs.items():
        med[name] = (median([r.rps for r in results]), median([r.p50_ms for r in results]), median([r.p99_ms for r in results]))
        errors = sum(r.errors for r in results)
        print(
            f"{name:<12} {med[name][0]:>8.0f} {med[name][1]:>8.1f} {med[name][2]:>8.1f}  "
            + ", ".join(f"{r.rps:.0f}/{r.p99_ms:.0f}" for r in results)
            + (f"  ERRORS {errors}" if errors else "")
        )
    for scale in scales:
        f, p = med[f"feed {scale.factor}×"], med[f"pull {scale.factor}×"]
        print(
            f"feed vs pull at {scale.factor}×: {f[0] / p[0]:.2f}× req/s, p99 {f[2] / p[2]:.2f}× of pull's (goal ≥ 2× and ≤ 0.5×)"
        )
    if len(scales) > 1:
        base, big = med[f"feed {scales[0].factor}×"], med[f"feed {scales[-1].factor}×"]
        print(
            f"feed read at {scales[-1].factor}× vs {scales[0].factor}×: p50 {big[1] / base[1]:.2f}×, "
            f"p99 {big[2] / base[2]:.2f}×, req/s {big[0] / base[0]:.2f}× (goal: p99 ≤ 1.1×)"
        )
        pb, pg = med[f"pull {scales[0].factor}×"], med[f"pull {scales[-1].factor}×"]
        print(
            f"pull read at {scales[-1].factor}× vs {scales[0].factor}×: p50 {pg[1] / pb[1]:.2f}×, "
            f"p99 {pg[2] / pb[2]:.2f}×, req/s {pg[0] / pb[0]:.2f}×"
        )
    if fanout is not None:
        print(f"fan-out to {scales[0].celebrity_followers:,} followers: {fanout:.2f} s; {fanout_load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
