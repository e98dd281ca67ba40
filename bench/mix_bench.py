"""The social-network mix through the gateway, this checkout against a baseline commit, in one run.

    .venv/bin/python bench/mix_bench.py                      # HEAD vs 021fdab (the code when issue 14 was filed)
    .venv/bin/python bench/mix_bench.py --baseline main~3    # another baseline
    .venv/bin/python bench/mix_bench.py --rounds 5 --seconds 15 --connections 8 --sweep 1,2,4,8,16
    .venv/bin/python bench/mix_bench.py --only home --baseline main   # the home read and its floor only
    .venv/bin/python bench/mix_bench.py --only user                   # user timeline reads, then posts, alone
    .venv/bin/python bench/mix_bench.py --only compose --users 60     # the post with a mention only

The DeathStarBench social-network shape: 60 % home timeline (GET /api/v1/feed), 30 % user timeline
(GET /api/v1/posts?author=…), 10 % compose post with an @mention (POST /api/v1/posts), by --users
users (200) following --follows (10) others each, every user from its own client IP (X-Forwarded-For
from 127.0.0.1, a trusted proxy) so the gateway's per-IP and per-user limits stay on as configured.

Both systems are up at once, each exactly as its tree's `make run` starts it (its own dev/stack.py,
run by bench/mix_driver.py with that tree's python; own embedded Postgres + Redis; shifted ports).
The baseline is checked out in a git worktree under .bench-cache/ with its own venv (`make venv`
there); the venv and the compiled gateway are kept in .bench-cache/ between runs, the worktree is
removed at the end. Both get the same generated data through the public API.

Figures (docs/performance.md says what each means):
- closed loop: wrk --rounds × --seconds per system, alternating order (reversed every other round):
  req/s, p50/p99 (wrk's), p50/p99 per request kind (the gateway's access log), CPU ms per request
  per process group (from /proc/<pid>/stat of each process tree), ratios HEAD/baseline;
- mix throughput at p99 ≤ 50 ms: the highest req/s among the --sweep connection counts whose p99
  stays ≤ 50 ms;
- fixed rate: --fixed-share (70 %) of each system's measured maximum, open loop (latency counted
  from each request's scheduled send time, as wrk2), p50/p99 per kind;
- home timeline alone: req/s and the feed service's gunicorn CPU per read;
- idle: each whole stack's CPU over --idle-seconds with no traffic, in % of one core;
- the framework floor: GET /api/v1/feed/bench-floor (FEED_BENCH_FLOOR=1, set here for both systems;
  a tree without it answers 404 and is left out), a minimal authenticated DRF view in feed returning
  a constant 20-post page through the same gateway, middleware and gunicorn: req/s and feed gunicorn
  CPU per request, beside the home timeline's, and their ratio.

--only home runs just the home timeline and floor rounds (--rounds of each, alternating systems).
--only user runs just user timeline reads alone and posts with a mention alone (--rounds of each,
alternating systems): CPU per request of feed's and users' gunicorn, Postgres and Redis.
--only compose runs just the compose-alone rounds (--rounds, alternating systems, after a 5 s warm-up
of each), the figure of a post with a mention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]
import wrk  # noqa: E402

CACHE = ROOT / ".bench-cache"
DEFAULT_BASELINE = "021fdab"
PASSWORD = "correct horse battery staple"
KINDS = ("home", "user", "compose")
TICK = os.sysconf("SC_CLK_TCK")
STOP = threading.Event()  # set on SIGTERM: seeding threads give up instead of finishing
systems_all: list = []  # both systems, once started: every measured run waits until both are quiet


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- the baseline's worktree and venv


def _build_outputs(tree: Path) -> list[Path]:
    """What `make venv` produces in a tree (all git-ignored): the venv and the compiled gateway."""
    gw = tree / "gateway"
    return [tree / ".venv", *[p for pattern in ("*.so", "*.c", "*.build") for p in gw.glob(pattern)]]


def _stash(tree: Path, saved: Path) -> None:
    """Move a tree's venv and gateway build into the cache (replacing what was there)."""
    if not (tree / ".venv").exists():
        return
    shutil.rmtree(saved, ignore_errors=True)
    (saved / "gateway").mkdir(parents=True)
    for item in _build_outputs(tree):
        item.rename(saved / item.relative_to(tree))


@contextlib.contextmanager
def baseline_tree(ref: str):
    """A worktree of ref with a ready venv; the venv and gateway build are cached in .bench-cache/."""
    sha = git("rev-parse", f"{ref}^{{commit}}")
    tree, saved = CACHE / f"baseline-{sha[:12]}", CACHE / f"build-{sha[:12]}"
    CACHE.mkdir(exist_ok=True)
    if tree.exists():  # left by an interrupted run: keep its build, drop the checkout
        _stash(tree, saved)
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
    git("worktree", "add", "--detach", str(tree), sha)
    try:
        if (saved / ".venv").exists():
            (saved / ".venv").rename(tree / ".venv")
            for item in (saved / "gateway").iterdir():
                item.rename(tree / "gateway" / item.name)
            # checkout gave every file a new mtime: mark the restored build as newer, in make's order
            for stamp in (tree / ".venv" / ".installed", tree / "gateway" / "proxy.build", tree / "gateway" / "ext.build"):
                if stamp.exists():
                    stamp.touch()
        cached = (tree / ".venv").exists()
        print(
            f"baseline {ref} = {sha[:12]}: worktree {tree}; make venv there "
            f"({'cached venv' if cached else 'first run: a few minutes'})",
            flush=True,
        )
        with open(CACHE / f"make-venv-{sha[:12]}.log", "w") as log:
            subprocess.run(["make", "venv"], cwd=tree, check=True, stdout=log, stderr=subprocess.STDOUT)
        yield tree, sha
    finally:
        _stash(tree, saved)
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


# ---------------------------------------------------------------- one running system


@dataclass
class System:
    label: str
    tree: Path
    proc: subprocess.Popen | None  # None: a system this script did not start (bench/chaos.py's)
    info: dict = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)

    def process(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError(f"{self.label}: not started by this script")
        return self.proc

    @property
    def gateway(self) -> str:
        return self.info["gateway"]

    @property
    def log(self) -> Path:
        return Path(self.info["run_dir"]) / "gateway.log"


def start_system(label: str, tree: Path, offset: int, replicas: int, log: Path, env: dict[str, str] | None = None) -> System:
    python = tree / ".venv" / "bin" / "python"
    # the client IP is X-Forwarded-For's, as behind a balancer; the users service's own sign-up
    # throttle (20/min per address, and it sees the gateway's) would make seeding 200 users take 10 min
    extra = {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32", "THROTTLE_REGISTER_IP": "100000/min", "FEED_BENCH_FLOOR": "1"}
    extra.update(env or {})
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [str(python), str(ROOT / "bench" / "mix_driver.py"), str(tree), str(offset), str(replicas), json.dumps(extra)],
            cwd=tree,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    return System(label, tree, proc)


def wait_started(system: System, timeout: float = 600) -> None:
    found: dict = {}
    proc = system.process()
    out = proc.stdout
    if out is None:
        raise RuntimeError(f"{system.label}: started without a stdout pipe")

    def reader() -> None:
        for line in out:
            if line.startswith("MIX-READY "):
                found.update(json.loads(line.split(" ", 1)[1]))
                break
        for _ in out:  # keep draining (migrations print nothing more; be safe)
            pass

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not found:
        if proc.poll() is not None:
            raise SystemExit(f"{system.label}: the system exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise SystemExit(f"{system.label}: not ready after {timeout:.0f} s")
        time.sleep(0.2)
    system.info = found


def stop_system(system: System) -> None:
    proc = system.process()
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()  # the driver stops its supervisor and embedded servers
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- CPU per process group from /proc


def group_of(name: str) -> str:
    """dev/stack.py process names → groups: `feed-0`, `feed-1` → `feed gunicorn`, `feed-worker` → itself."""
    service, _, role = name.partition("-")
    if role.isdigit():
        return f"{service} gunicorn"
    return f"{service} {role}" if role else name


def cpu_by_group(system: System) -> dict[str, float]:
    """CPU seconds so far of each process tree of a system (user + system, with reaped children's)."""
    procs: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()  # state ppid pgrp … utime(11) stime(12) cutime(13) cstime(14)
        procs[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), comm)
    roots = {pid: group_of(name) for name, pid in system.info["pids"].items()}
    driver = system.info["driver"]
    totals: dict[str, float] = {}
    for pid, (ppid, ticks, comm) in procs.items():
        group, cursor, parent = None, pid, ppid
        while True:
            if cursor in roots:
                group = roots[cursor]
                break
            if parent == driver:  # the embedded infrastructure, started by the driver itself
                group = "postgres" if "postgres" in comm else "redis" if "redis" in comm else None
                break
            if parent in (0, 1) or parent not in procs:
                break
            cursor, parent = parent, procs[parent][0]
        if group:
            totals[group] = totals.get(group, 0.0) + ticks / TICK
    return totals


def worker_parent_cpu(system: System) -> dict[str, float]:
    """CPU seconds so far of each Celery worker's own process (not its pool's children): with the
    prefork pool the parent's share (BRPOP, bookkeeping, acks, the pipe to the children)."""
    out: dict[str, float] = {}
    for name, pid in system.info["pids"].items():
        if name.endswith("-worker"):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[group_of(name)] = sum(int(x) for x in fields[11:13]) / TICK
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {g: after.get(g, 0.0) - before.get(g, 0.0) for g in after}


# ---------------------------------------------------------------- data: the same for both systems


def seed(system: System, args) -> None:
    """--users users through the public API (each from its own IP), --follows follows each (one
    seeded graph), --posts posts each; then access tokens for the load (minted with the system's
    dev signing key, valid for the whole run)."""
    rng = random.Random(14)
    names = [f"mix{i:04d}" for i in range(args.users)]
    follows = {n: rng.sample([m for m in names if m != n], min(args.follows, len(names) - 1)) for n in names}
    with httpx.Client(base_url=system.gateway, timeout=60) as client:

        def call(method: str, path: str, headers: dict, body: dict, ok=(200, 201)) -> httpx.Response:
            """A seeding request, retried on 429/5xx/transport errors (the machine may be busy)."""
            for attempt in range(6):
                if STOP.is_set():
                    raise SystemExit("stopped")
                try:
                    response = client.request(method, path, headers=headers, json=body)
                except httpx.TransportError:
                    response = None
                if response is not None and (response.status_code in ok or response.status_code < 429):
                    return response
                time.sleep(float(response.headers.get("Retry-After", 1)) if response is not None else 1 + attempt)
            raise SystemExit(
                f"{system.label}: seeding {method} {path} kept failing: "
                f"{response.status_code if response is not None else 'no answer'}"
            )

        def register(i: int) -> tuple[str, int]:
            headers = {"X-Forwarded-For": ip(i)}
            r = call(
                "POST",
                "/api/v1/auth/register",
                headers,
                {"username": names[i], "email": f"{names[i]}@bench.example", "password": PASSWORD},
            )
            if r.status_code != 201:  # an earlier try timed out after the user was created
                r = call("POST", "/api/v1/auth/login", headers, {"username": names[i], "password": PASSWORD})
            r.raise_for_status()
            return r.json()["access"], int(r.json()["user"]["id"])

        def act(i: int) -> None:
            headers = {"Authorization": f"Bearer {registered[i][0]}", "X-Forwarded-For": ip(i)}
            for other in follows[names[i]]:
                call("POST", f"/api/v1/users/{other}/follow", headers, {}).raise_for_status()
            for k in range(args.posts):
                call("POST", "/api/v1/posts", headers, {"body": f"seed post {k} by {names[i]}"}).raise_for_status()

        with ThreadPoolExecutor(2) as pool:  # password hashing is CPU-bound: two at a time
            registered = list(pool.map(register, range(len(names))))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(act, range(len(names))))
    key = serialization.load_pem_private_key(
        (Path(system.info["run_dir"]) / "keys" / "users-dev.pem").read_bytes(), password=None
    )
    if not isinstance(key, Ed25519PrivateKey):  # the dev key signs EdDSA tokens
        raise SystemExit(f"expected an Ed25519 key, found {type(key).__name__}")
    now = int(time.time())
    system.tokens = [
        jwt.encode(
            {
                "iss": "social-users",
                "aud": "social-api",
                "sub": str(uid),
                "username": names[i],
                "iat": now,
                "exp": now + 4 * 3600,
                "jti": uuid.uuid4().hex,
            },
            key,
            algorithm="EdDSA",
            headers={"kid": "dev", "typ": "at+jwt"},
        )
        for i, (_, uid) in enumerate(registered)
    ]
    system.info["names"] = names


def ip(i: int) -> str:
    return f"10.{14 + i // 65536}.{(i // 256) % 256}.{i % 256}"


def settle(systems: list[System], timeout: float = 180, quiet: float = 0.03) -> None:
    """Wait until every system is quiet (the events of what was sent consumed, fan-outs and
    notifications done): its processes but Postgres/Redis under `quiet` of one core over 2 s,
    twice in a row (the idle stack itself uses ~1.5 %)."""
    deadline = time.monotonic() + timeout
    for system in systems:
        calm = 0
        while calm < 2 and time.monotonic() < deadline:
            before = cpu_by_group(system)
            time.sleep(2)
            busy = sum(v for g, v in cpu_delta(before, cpu_by_group(system)).items() if g not in ("postgres", "redis"))
            calm = calm + 1 if busy < quiet * 2 else 0
        if calm < 2:
            print(f"  note: {system.label} still busy after {timeout:.0f} s of waiting for quiet", flush=True)


# ---------------------------------------------------------------- load: wrk and the fixed-rate generator


FLOOR_PATH = "/api/v1/feed/bench-floor"


def mix_lua(system: System, weights: tuple[int, int, int], home_path: str = "/api/v1/feed") -> str:
    names = system.info["names"]
    tokens = ",".join(json.dumps(t) for t in system.tokens)
    ips = ",".join(json.dumps(ip(i)) for i in range(len(names)))
    quoted = ",".join(json.dumps(n) for n in names)
    home, user = weights[0], weights[0] + weights[1]
    return f"""
tokens = {{{tokens}}}
ips = {{{ips}}}
names = {{{quoted}}}
local counter = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
init = function(args)
  math.randomseed(os.time() * 100 + (tid or 0))
end
request = function()
  counter = counter + 1
  local i = math.random(#tokens)
  local h = {{["Authorization"] = "Bearer " .. tokens[i], ["X-Forwarded-For"] = ips[i]}}
  local r = math.random(100)
  if r <= {home} then
    return wrk.format("GET", "{home_path}", h)
  elseif r <= {user} then
    return wrk.format("GET", "/api/v1/posts?author=" .. names[math.random(#names)], h)
  end
  h["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/v1/posts", h,
    '{{"body": "mix post ' .. counter .. ' for @' .. names[math.random(#names)] .. '"}}')
end
"""


def kind_of(method: str, path: str) -> str | None:
    if path.startswith("/api/v1/feed"):
        return "home"
    if path.startswith("/api/v1/posts"):
        return "compose" if method == "POST" else "user"
    return None


def access_log_latencies(log: Path, start: int) -> dict[str, list[float]]:
    """duration_ms per request kind from the gateway's JSON access log, from byte offset start."""
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    with open(log, "rb") as fh:
        fh.seek(start)
        for line in fh:
            if b'"duration_ms"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            kind = kind_of(entry.get("method", ""), entry.get("path", ""))
            if kind:
                out[kind].append(float(entry["duration_ms"]))
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Round:
    result: wrk.Result
    cpu: dict[str, float]  # CPU seconds per group over the round
    kinds: dict[str, list[float]]
    load: str
    parents: dict[str, float] = field(default_factory=dict)  # CPU seconds of each worker's own process

    def cpu_ms(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / max(1, self.result.requests) * 1000


def wrk_round(
    system: System,
    name: str,
    *,
    connections: int,
    seconds: int,
    weights: tuple[int, int, int] = (60, 30, 10),
    home_path: str = "/api/v1/feed",
) -> Round:
    """One wrk run on a quiet system. Its CPU counts from the start until the system is quiet again,
    so the background work the requests caused (fan-out, notifications, events) is in it."""
    settle(systems_all, timeout=60)  # neither system's leftovers in this run
    offset = system.log.stat().st_size if system.log.exists() else 0
    before, parents = cpu_by_group(system), worker_parent_cpu(system)
    result = wrk.run(
        name,
        system.gateway,
        lua=mix_lua(system, weights, home_path),
        connections=connections,
        seconds=seconds,
        threads=min(2, connections),
    )
    settle([system], timeout=60)
    cpu = cpu_delta(before, cpu_by_group(system))
    parents = cpu_delta(parents, worker_parent_cpu(system))
    kinds = access_log_latencies(system.log, offset) if system.log.exists() else {}
    return Round(result, cpu, kinds, uptime(), parents)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() == "close"


async def _fixed_rate(system: System, rate: float, seconds: float, max_in_flight: int) -> dict:
    """Open loop: request k is due at start + k / rate whatever the answers do; its latency counts
    from that due time (no coordinated omission). At most max_in_flight keep-alive connections;
    a request that finds none free waits, and that wait is in its latency."""
    host, port = system.gateway.removeprefix("http://").split(":")
    names, rng = system.info["names"], random.Random(7)
    free: asyncio.Queue = asyncio.Queue()
    for _ in range(max_in_flight):
        free.put_nowait(None)  # connections are opened lazily
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    statuses: dict[int, int] = {}
    errors = 0
    loop = asyncio.get_running_loop()

    def request(k: int) -> tuple[str, bytes]:
        i = rng.randrange(len(names))
        head = f"Host: {host}:{port}\r\nAuthorization: Bearer {system.tokens[i]}\r\nX-Forwarded-For: {ip(i)}\r\n"
        r = rng.randrange(100)
        if r < 60:
            return "home", f"GET /api/v1/feed HTTP/1.1\r\n{head}\r\n".encode()
        if r < 90:
            return "user", f"GET /api/v1/posts?author={names[rng.randrange(len(names))]} HTTP/1.1\r\n{head}\r\n".encode()
        body = json.dumps({"body": f"fixed-rate post {k} for @{names[rng.randrange(len(names))]}"}).encode()
        return "compose", (
            f"POST /api/v1/posts HTTP/1.1\r\n{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def one(k: int, due: float) -> None:
        nonlocal errors
        kind, raw = request(k)
        conn = await free.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, int(port))
            conn[1].write(raw)
            status, close = await asyncio.wait_for(_read_response(conn[0]), 30)
            statuses[status] = statuses.get(status, 0) + 1
            latencies[kind].append((loop.time() - due) * 1000)
            if close:
                conn[1].close()
                conn = None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1
            if conn is not None:
                conn[1].close()
            conn = None
        finally:
            free.put_nowait(conn)

    total = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for k in range(total):
        due = start + k / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(k, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    while not free.empty():
        conn = free.get_nowait()
        if conn is not None:
            conn[1].close()
    return {"latencies": latencies, "statuses": statuses, "errors": errors, "sent": total, "elapsed": elapsed}


def fixed_rate(system: System, rate: float, seconds: float, max_in_flight: int = 64) -> dict:
    return asyncio.run(_fixed_rate(system, rate, seconds, max_in_flight))


# ---------------------------------------------------------------- the run


def alternate(systems: list[System], i: int) -> list[System]:
    return systems if i % 2 == 0 else list(reversed(systems))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(head: float, base: float) -> str:
    return f"{head / base:.2f}×" if base else "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the baseline (default %(default)s)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per service, as `make run` (2)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--follows", type=int, default=10)
    parser.add_argument("--posts", type=int, default=3, help="seed posts per user")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="per wrk round")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections of the closed-loop rounds")
    parser.add_argument("--sweep", default="1,2,3,4,6,8,16", help="connection counts for the p99 ≤ 50 ms throughput")
    parser.add_argument("--p99-limit", type=float, default=50.0, help="ms")
    parser.add_argument("--fixed-share", type=float, default=0.7, help="fixed rate as a share of the maximum req/s")
    parser.add_argument("--fixed-seconds", type=int, default=15)
    parser.add_argument("--idle-seconds", type=int, default=30)
    parser.add_argument("--port-offset", type=int, default=5000, help="baseline's ports +this, HEAD's +this+500")
    parser.add_argument(
        "--head-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for HEAD's system only (repeatable), e.g. GUNICORN_WORKERS=1 to try a setting",
    )
    parser.add_argument(
        "--only",
        choices=("all", "home", "user", "compose", "idle", "sweep"),
        default="all",
        help="home: the home read and its floor only; user: user timeline reads alone and posts with a mention "
        "alone; compose: the post with a mention only (worker CPU per post); idle: start both systems, no data "
        "and no traffic, and measure only the idle stack CPU; sweep: the mix at each --sweep connection count, "
        "--rounds times (the throughput at p99 ≤ --p99-limit alone)",
    )
    args = parser.parse_args()
    if args.only != "idle":
        wrk.require_wrk()
    sweep = [int(c) for c in args.sweep.split(",")]

    def stop(*_) -> None:
        STOP.set()
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    head_sha = git("rev-parse", "HEAD")
    dirty = " (+ uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    print(f"start: {uptime()}", flush=True)
    with contextlib.ExitStack() as stack_:
        base_tree, base_sha = stack_.enter_context(baseline_tree(args.baseline))
        systems = [
            start_system("baseline", base_tree, args.port_offset, args.replicas, CACHE / "baseline-driver.log"),
            start_system(
                "HEAD",
                ROOT,
                args.port_offset + 500,
                args.replicas,
                CACHE / "head-driver.log",
                dict(item.split("=", 1) for item in args.head_env),
            ),
        ]
        systems_all[:] = systems
        for system in systems:
            stack_.callback(stop_system, system)
        for system in systems:
            wait_started(system)
        if args.only == "idle":
            print("both systems up; waiting for quiet", flush=True)
            settle(systems)
            idle, idle_load0, idle_load = measure_idle(systems, args.idle_seconds)
            print(f"\n== idle: HEAD {head_sha[:12]}{dirty} vs baseline {base_sha[:12]} ==")
            report_idle(args, systems, idle, idle_load0, idle_load)
            return 0
        print(f"both systems up; seeding {args.users} users × {args.follows} follows × {args.posts} posts", flush=True)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: seed(s, args), systems))
        settle(systems)
        print(f"seeded and settled; {uptime()}", flush=True)
        if args.only == "home":
            home, floor = home_rounds(systems, args, rounds=args.rounds)
            print(f"\n== home timeline read: HEAD {head_sha[:12]}{dirty} vs baseline {base_sha[:12]} ==")
            print(f"load at the end: {uptime()}")
            report_home(systems, home, floor)
            return 0
        if args.only == "user":
            user = user_rounds(systems, args, rounds=args.rounds)
            print(f"\n== user timeline and compose: HEAD {head_sha[:12]}{dirty} vs baseline {base_sha[:12]} ==")
            print(f"load at the end: {uptime()}")
            report_user(systems, args, user)
            return 0
        if args.only == "sweep":
            for system in systems:
                wrk_round(system, "warm-up", connections=args.connections, seconds=5)
            repeated = sweep_rounds(systems, args, sweep)
            print(f"\n== mix sweep: HEAD {head_sha[:12]}{dirty} vs baseline {base_sha[:12]} ==")
            if args.head_env:
                print(f"HEAD's system ran with {' '.join(args.head_env)}")
            print(f"load at the end: {uptime()}")
            report_sweep(systems, args, repeated)
            return 0
        if args.only == "compose":
            for system in systems:  # warm-up: connection pools, the workers' first tasks
                wrk_round(system, "warm-up", connections=2, seconds=5, weights=(0, 0, 100))
            composes: dict[str, list[dict]] = {s.label: [] for s in systems}
            for i in range(args.rounds):
                for system in alternate(systems, i):
                    composes[system.label].append(compose_round(system, args))
                print(f"  compose round {i + 1} done; {uptime()}", flush=True)
            print(f"\n== post with a mention: HEAD {head_sha[:12]}{dirty} vs baseline {base_sha[:12]} ==")
            print(f"load at the end: {uptime()}")
            report_compose(systems, composes)
            return 0

        idle, idle_load0, idle_load = measure_idle(systems, args.idle_seconds)

        for system in systems:  # warm-up: caches, connection pools, Postgres buffers
            wrk_round(system, "warm-up", connections=args.connections, seconds=5)
        settle(systems, timeout=60)

        rounds: dict[str, list[Round]] = {s.label: [] for s in systems}
        for i in range(args.rounds):
            for system in alternate(systems, i):
                rnd = wrk_round(system, f"mix {system.label}", connections=args.connections, seconds=args.seconds)
                rounds[system.label].append(rnd)
                print(f"  round {i + 1}: {rnd.result.row()}", flush=True)
            print(f"  round {i + 1} done; {uptime()}", flush=True)

        sweeps: dict[str, dict[int, Round]] = {s.label: {} for s in systems}
        for j, conns in enumerate(sweep):
            for system in alternate(systems, j):
                rnd = wrk_round(system, f"sweep {system.label} c{conns}", connections=conns, seconds=args.seconds)
                sweeps[system.label][conns] = rnd
                print(f"  sweep: {rnd.result.row()}", flush=True)
        print(f"  sweep done; {uptime()}", flush=True)

        # fixed rate: every system at the same rate (a share of the baseline's maximum), then each at
        # the same share of its own maximum
        best = {
            s.label: max([r.result.rps for r in rounds[s.label]] + [r.result.rps for r in sweeps[s.label].values()])
            for s in systems
        }
        fixed: dict[str, dict] = {}
        plan = [(f"{s.label} at the baseline's rate", s, best["baseline"] * args.fixed_share) for s in systems]
        plan += [(f"{s.label} at its own rate", s, best[s.label] * args.fixed_share) for s in reversed(systems)]
        for name, system, rate in plan:
            settle(systems, timeout=120)
            fixed[name] = {**fixed_rate(system, rate, args.fixed_seconds), "rate": rate, "load": uptime()}
            print(f"  fixed rate, {name}: {rate:.0f} req/s for {args.fixed_seconds} s; {fixed[name]['load']}", flush=True)

        compose = {system.label: [compose_round(system, args)] for system in systems}

        home, floor = home_rounds(systems, args, rounds=2, warm=False)
        end_load = uptime()

    report(
        args,
        systems,
        base_sha,
        head_sha + dirty,
        idle,
        idle_load0,
        idle_load,
        rounds,
        sweeps,
        fixed,
        home,
        floor,
        compose,
        end_load,
    )
    return 0


def sweep_rounds(systems: list[System], args, sweep: list[int]) -> dict[str, dict[int, list[Round]]]:
    """The mix at every connection count of the sweep, --rounds times, alternating systems."""
    out: dict[str, dict[int, list[Round]]] = {s.label: {c: [] for c in sweep} for s in systems}
    for i in range(args.rounds):
        for j, conns in enumerate(sweep):
            for system in alternate(systems, i + j):
                rnd = wrk_round(system, f"sweep {system.label} c{conns}", connections=conns, seconds=args.seconds)
                out[system.label][conns].append(rnd)
                print(f"  sweep: {rnd.result.row()}", flush=True)
        print(f"  sweep round {i + 1} done; {uptime()}", flush=True)
    return out


def kind_latencies(rs: list[Round]) -> dict[str, list[float]]:
    """Every round's latencies per request kind (gateway access log), pooled."""
    return {k: [v for r in rs for v in r.kinds.get(k, [])] for k in KINDS}


def cpu_ms_per_request(rs: list[Round]) -> float:
    """Median over the rounds of all processes' CPU ms per request."""
    return median([sum(r.cpu.values()) / max(1, r.result.requests) * 1000 for r in rs])


def best_within(points: list[tuple[int, float, float]], limit: float) -> tuple[float, int]:
    """(req/s, connections) of the highest req/s among (connections, req/s, p99) points with p99 ≤ limit,
    (0, 0) when none."""
    ok = [(rps, conns) for conns, rps, p99 in points if p99 <= limit]
    return max(ok) if ok else (0.0, 0)


def report_sweep(systems: list[System], args, repeated: dict[str, dict[int, list[Round]]]) -> None:
    """Per connection count: median req/s and p99 of the rounds, p99 per kind (gateway access log),
    CPU ms per request by group; then the throughput at p99 ≤ the limit, from the medians."""
    labels = [s.label for s in systems]
    b, h = labels
    best = {}
    for label in labels:
        print(f"\n{label}: median of {args.rounds} rounds at each connection count (wrk -d{args.seconds}s)")
        points = []
        for conns, rs in repeated[label].items():
            rps, p99 = median([r.result.rps for r in rs]), median([r.result.p99_ms for r in rs])
            points.append((conns, rps, p99))
            per_kind = " ".join(f"{k} {pct(v, 0.99):.0f}" for k, v in kind_latencies(rs).items())
            cpu = sorted({g for r in rs for g in r.cpu}, key=lambda g: -median([r.cpu_ms(g) for r in rs]))
            top = ", ".join(f"{g} {median([r.cpu_ms(g) for r in rs]):.2f}" for g in cpu[:6])
            total = cpu_ms_per_request(rs)
            print(
                f"  c{conns:<3} {rps:>5.0f} req/s (rounds {', '.join(f'{r.result.rps:.0f}' for r in rs)}), p99 "
                f"{p99:.0f} ms (rounds {', '.join(f'{r.result.p99_ms:.0f}' for r in rs)}); p99 per kind {per_kind}; "
                f"CPU ms/request {total:.2f}: {top}"
            )
        best[label] = best_within(points, args.p99_limit)
    print(
        f"mix throughput at p99 ≤ {args.p99_limit:.0f} ms (medians): HEAD {best[h][0]:.0f} req/s (c{best[h][1]}), "
        f"baseline {best[b][0]:.0f} req/s (c{best[b][1]}): {ratio(best[h][0], best[b][0])}"
    )


def compose_round(system: System, args) -> dict:
    """Posts with a mention alone, wrk -c2 for --seconds; CPU counted until the system is quiet again
    (the fan-out and the notification run after the answer)."""
    rnd = wrk_round(system, f"compose only {system.label}", connections=2, seconds=args.seconds, weights=(0, 0, 100))
    print(f"  compose alone: {rnd.result.row()}; {rnd.load}", flush=True)
    return {"round": rnd, "cpu": rnd.cpu, "parents": rnd.parents, "posts": max(1, rnd.result.requests - rnd.result.errors)}


def report_compose(systems: list[System], compose: dict[str, list[dict]]) -> None:
    """Worker CPU per post for each round, and the median of the rounds."""
    labels = [s.label for s in systems]
    b, h = labels
    print("\ncompose alone (POST with a mention, wrk -c2): CPU per post until the system is quiet again, in ms")
    per_post: dict[str, float] = {}
    for label in labels:
        totals = []
        for c in compose[label]:

            def ms(group: str, c: dict = c) -> float:
                return c["cpu"].get(group, 0.0) / c["posts"] * 1000

            workers = sum(ms(g) for g in c["cpu"] if g.endswith(" worker"))
            relays = sum(ms(g) for g in c["cpu"] if g.endswith(" relay"))
            parts = ", ".join(f"{g} {ms(g):.2f}" for g in sorted(c["cpu"]) if c["cpu"][g] > 0)
            own = c.get("parents", {})
            split = ", ".join(f"{g} {own[g] / c['posts'] * 1000:.2f} of {ms(g):.2f}" for g in sorted(own) if ms(g) > 0)
            totals.append(workers)
            print(
                f"{label:10} {c['round'].result.rps:.0f} posts/s, {c['posts']} posts; all workers {workers:.2f}, "
                f"relays {relays:.2f}: {parts}; {c['round'].load}"
            )
            if split:
                print(f"{'':10} in each worker's own process (not its pool's children): {split}")
        per_post[label] = median(totals)
        if len(totals) > 1:
            print(f"{label:10} all workers per round: {', '.join(f'{t:.2f}' for t in totals)} (median {per_post[label]:.2f})")
    print(
        f"post with a mention, total worker CPU: HEAD {per_post[h]:.2f} ms, baseline {per_post[b]:.2f} ms, "
        f"{ratio(per_post[h], per_post[b])} (goal ≤ 5 ms)"
    )


def has_floor(system: System) -> bool:
    """Whether this tree serves the floor view (FEED_BENCH_FLOOR): a 200 through its gateway."""
    headers = {"Authorization": f"Bearer {system.tokens[0]}", "X-Forwarded-For": ip(0)}
    return httpx.get(system.gateway + FLOOR_PATH, headers=headers, timeout=10).status_code == 200


def home_rounds(
    systems: list[System], args, *, rounds: int, warm: bool = True
) -> tuple[dict[str, list[Round]], dict[str, list[Round]]]:
    """Home timeline reads alone and floor reads alone, wrk -c--connections, alternating systems."""
    floors = [s for s in systems if has_floor(s)]
    if warm:
        for system in systems:
            wrk_round(system, "warm-up", connections=args.connections, seconds=5, weights=(100, 0, 0))
        for system in floors:
            wrk_round(system, "warm-up", connections=args.connections, seconds=5, weights=(100, 0, 0), home_path=FLOOR_PATH)
    home: dict[str, list[Round]] = {s.label: [] for s in systems}
    floor: dict[str, list[Round]] = {s.label: [] for s in floors}
    for i in range(rounds):
        for system in alternate(systems, i):
            rnd = wrk_round(
                system, f"home only {system.label}", connections=args.connections, seconds=args.seconds, weights=(100, 0, 0)
            )
            home[system.label].append(rnd)
            print(f"  home timeline alone: {rnd.result.row()}", flush=True)
            if system in floors:
                rnd = wrk_round(
                    system,
                    f"floor {system.label}",
                    connections=args.connections,
                    seconds=args.seconds,
                    weights=(100, 0, 0),
                    home_path=FLOOR_PATH,
                )
                floor[system.label].append(rnd)
                print(f"  framework floor: {rnd.result.row()}", flush=True)
        print(f"  home round {i + 1} done; {uptime()}", flush=True)
    return home, floor


def report_home(systems: list[System], home: dict[str, list[Round]], floor: dict[str, list[Round]]) -> None:
    labels = [s.label for s in systems]
    b, h = labels
    print(
        "\nhome timeline alone (wrk, GET /api/v1/feed only) and the framework floor (GET "
        f"{FLOOR_PATH}: a constant 20-post page from a minimal authenticated DRF view on the same stack): "
        "req/s, feed gunicorn CPU per request (medians of the rounds)"
    )
    hm = {}
    for label in labels:
        rs = home[label]
        feed_ms = [r.cpu_ms("feed gunicorn") for r in rs]
        hm[label] = (
            median([r.result.rps for r in rs]),
            median(feed_ms),
            cpu_ms_per_request(rs),
        )
        print(
            f"{label:10} home  {hm[label][0]:>6.0f} req/s; feed gunicorn {hm[label][1]:.2f} ms CPU per read; all "
            f"processes {hm[label][2]:.2f} ms; rounds req/s {', '.join(f'{r.result.rps:.0f}' for r in rs)}, feed ms "
            f"{', '.join(f'{ms:.2f}' for ms in feed_ms)}"
        )
        if label in floor:
            fs = floor[label]
            f_rps, f_cpu = median([r.result.rps for r in fs]), median([r.cpu_ms("feed gunicorn") for r in fs])
            print(
                f"{label:10} floor {f_rps:>6.0f} req/s; feed gunicorn {f_cpu:.2f} ms CPU per request; rounds req/s "
                f"{', '.join(f'{r.result.rps:.0f}' for r in fs)}"
            )
            print(
                f"{label:10} home/floor: req/s {ratio(hm[label][0], f_rps)} (goal ≥ 0.6), feed CPU per request "
                f"{ratio(hm[label][1], f_cpu)}"
            )
        else:
            print(f"{label:10} floor: not served by this tree")
    print(f"home timeline read, service CPU per request: HEAD {hm[h][1]:.2f} ms, baseline {hm[b][1]:.2f} ms (goal ≤ 1 ms)")


USER_KINDS = {"user": ("user timeline reads", (0, 100, 0)), "compose": ("posts with a mention", (0, 0, 100))}
USER_GROUPS = ("feed gunicorn", "users gunicorn", "postgres", "redis", "gateway")


def user_rounds(systems: list[System], args, *, rounds: int) -> dict[str, dict[str, list[Round]]]:
    """User timeline reads alone (wrk -c--connections), then posts with a mention alone (wrk -c2, as
    the mix's compose-alone step: a post's background work is counted until the system is quiet),
    --rounds of each, alternating systems."""
    for system in systems:
        wrk_round(system, "warm-up", connections=args.connections, seconds=5, weights=USER_KINDS["user"][1])
    out: dict[str, dict[str, list[Round]]] = {kind: {s.label: [] for s in systems} for kind in USER_KINDS}
    for i in range(rounds):
        for kind, (what, weights) in USER_KINDS.items():
            conns = args.connections if kind == "user" else 2
            for system in alternate(systems, i):
                rnd = wrk_round(system, f"{kind} only {system.label}", connections=conns, seconds=args.seconds, weights=weights)
                out[kind][system.label].append(rnd)
                print(f"  {what} alone: {rnd.result.row()}", flush=True)
        print(f"  user round {i + 1} done; {uptime()}", flush=True)
    return out


def _per_request(rounds: list[Round], row: str) -> float:
    """Median over the rounds of a group's CPU ms per request ("workers": every Celery worker; "all
    processes": everything)."""
    if row == "all processes":
        return cpu_ms_per_request(rounds)
    if row == "workers":
        return median(
            [sum(v for g, v in r.cpu.items() if g.endswith(" worker")) / max(1, r.result.requests) * 1000 for r in rounds]
        )
    return median([r.cpu_ms(row) for r in rounds])


def report_user(systems: list[System], args, user: dict[str, dict[str, list[Round]]]) -> None:
    labels = [s.label for s in systems]
    b, h = labels
    for kind, (what, _) in USER_KINDS.items():
        conns = args.connections if kind == "user" else 2
        print(f"\n{what} alone (wrk -c{conns} -d{args.seconds}s × {args.rounds}): CPU ms per request (medians of the rounds)")
        for label in labels:
            rs = user[kind][label]
            loads = " | ".join(r.load.split("load average:")[-1].strip() for r in rs)
            print(
                f"{label:10} req/s {median([r.result.rps for r in rs]):.0f} (rounds "
                f"{', '.join(f'{r.result.rps:.0f}' for r in rs)}); errors {sum(r.result.errors for r in rs)}; "
                f"load after each round: {loads}"
            )
        print(f"{'group':<24} {b:>10} {h:>10} {'HEAD/base':>10}")
        for row in [*USER_GROUPS, "workers", "all processes"]:
            vb, vh = _per_request(user[kind][b], row), _per_request(user[kind][h], row)
            print(f"{row:<24} {vb:>10.3f} {vh:>10.3f} {ratio(vh, vb):>10}")


def measure_idle(systems: list[System], seconds: int) -> tuple[list[dict[str, float]], str, str]:
    """Both stacks at once, no traffic: CPU seconds per process group over `seconds`."""
    before = [cpu_by_group(s) for s in systems]
    load0 = uptime()
    time.sleep(seconds)
    idle = [cpu_delta(b, cpu_by_group(s)) for b, s in zip(before, systems, strict=True)]
    load = uptime()
    print(f"idle measured over {seconds} s; {load}", flush=True)
    return idle, load0, load


def report(
    args, systems, base_sha, head_sha, idle, idle_load0, idle_load, rounds, sweeps, fixed, home, floor, compose, end_load
) -> None:
    labels = [s.label for s in systems]
    b, h = labels
    print(f"\n== mix benchmark: HEAD {head_sha[:12]} vs baseline {base_sha[:12]} ==")
    print(
        f"{os.cpu_count()} cores shared by both systems and the load generator; {args.users} users × {args.follows} "
        f"follows; mix 60 % home / 30 % user timeline / 10 % compose with a mention; one client IP per user; "
        f"{args.replicas} replicas per service"
    )
    if args.head_env:
        print(f"HEAD's system ran with {' '.join(args.head_env)}")
    print(f"load at the end: {end_load}")

    print(f"\nclosed loop: wrk -c{args.connections} -d{args.seconds}s × {args.rounds} alternating rounds (medians)")
    print(f"{'':10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   per kind p50/p99 ms (gateway access log)")
    med = {}
    for label in labels:
        rs = rounds[label]
        med[label] = (
            median([r.result.rps for r in rs]),
            median([r.result.p50_ms for r in rs]),
            median([r.result.p99_ms for r in rs]),
        )
        per_kind = "  ".join(f"{k} {pct(v, 0.5):.1f}/{pct(v, 0.99):.1f}" for k, v in kind_latencies(rs).items())
        print(
            f"{label:10} {med[label][0]:>8.0f} {med[label][1]:>8.1f} {med[label][2]:>8.1f} "
            f"{sum(r.result.errors for r in rs):>7}   {per_kind}"
        )
        print(f"{'':10} rounds req/s: {', '.join(f'{r.result.rps:.0f}' for r in rs)}")
    print(
        f"HEAD/baseline: req/s {ratio(med[h][0], med[b][0])}, p50 {ratio(med[h][1], med[b][1])}, "
        f"p99 {ratio(med[h][2], med[b][2])}"
    )

    groups = sorted({g for label in labels for r in rounds[label] for g in r.cpu})
    print("\nCPU ms per request by process group (median of the rounds)")
    print(f"{'group':<24} {b:>10} {h:>10} {'HEAD/base':>10}")
    total = {label: cpu_ms_per_request(rounds[label]) for label in labels}
    for g in groups:
        vb, vh = (median([r.cpu_ms(g) for r in rounds[label]]) for label in labels)
        print(f"{g:<24} {vb:>10.2f} {vh:>10.2f} {ratio(vh, vb):>10}")
    print(f"{'all processes':<24} {total[b]:>10.2f} {total[h]:>10.2f} {ratio(total[h], total[b]):>10}")

    print(f"\nthroughput at p99 ≤ {args.p99_limit:.0f} ms (wrk -d{args.seconds}s at each connection count)")
    best = {}
    for label in labels:
        row = ", ".join(f"c{c}: {r.result.rps:.0f} req/s p99 {r.result.p99_ms:.0f} ms" for c, r in sweeps[label].items())
        best[label] = best_within([(c, r.result.rps, r.result.p99_ms) for c, r in sweeps[label].items()], args.p99_limit)
        print(f"{label:10} {row}")

    def at(label: str) -> str:
        rps, conns = best[label]
        return f"{rps:.0f} req/s (c{conns})" if conns else "none (no connection count kept p99 ≤ the limit)"

    print(
        f"mix throughput at p99 ≤ {args.p99_limit:.0f} ms: HEAD {at(h)}, baseline {at(b)}: "
        f"{ratio(best[h][0], best[b][0])} (goal ≥ 3×)"
    )

    print(
        f"\nfixed rate (open loop, {args.fixed_seconds} s, latency from each request's due time; "
        f"{args.fixed_share:.0%} of the maximum req/s)"
    )
    for name, f in fixed.items():
        lat = f["latencies"]
        every = [v for vs in lat.values() for v in vs]
        per_kind = "  ".join(f"{k} {pct(v, 0.5):.1f}/{pct(v, 0.99):.1f}" for k, v in lat.items())
        non2xx = sum(n for st, n in f["statuses"].items() if not 200 <= st < 300)
        print(
            f"{name:<30} {f['rate']:>5.0f} req/s asked, {len(every) / f['elapsed']:.0f} answered/s: p50 "
            f"{pct(every, 0.5):.1f} ms, p99 {pct(every, 0.99):.1f} ms; per kind p50/p99 ms: {per_kind}; "
            f"non-2xx {non2xx}, errors {f['errors']}"
        )

    report_compose(systems, compose)

    report_home(systems, home, floor)

    report_idle(args, systems, idle, idle_load0, idle_load)


def report_idle(args, systems, idle, idle_load0, idle_load) -> None:
    labels = [s.label for s in systems]
    print(f"\nidle ({args.idle_seconds} s, no traffic, both stacks at once; from {idle_load0} to {idle_load})")
    for label, cpu in zip(labels, idle, strict=True):
        app = sum(v for g, v in cpu.items() if g not in ("postgres", "redis"))
        parts = ", ".join(f"{g} {v / args.idle_seconds * 100:.2f}" for g, v in sorted(cpu.items()) if v > 0)
        print(
            f"{label:10} whole stack {sum(cpu.values()) / args.idle_seconds * 100:.2f} % of one core "
            f"(without Postgres/Redis {app / args.idle_seconds * 100:.2f} %): {parts}"
        )
    ib, ih = (sum(c.values()) / args.idle_seconds * 100 for c in idle)
    print(f"idle stack CPU: HEAD {ih:.2f} %, baseline {ib:.2f} % of one core (goal < 2 %)")


if __name__ == "__main__":
    sys.exit(main())
