"""Users service benchmark: req/s and p50/p99 for login, me and follow (`make bench-users`).

Starts its own embedded Postgres + Redis and the users service (gunicorn gthread), or measures
an already running one with --url. Not a test: it prints figures; machines differ.
Login is dominated by Argon2id by design (about 100 ms of CPU and 100 MiB per hash).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "dev"), str(ROOT / "bench")]
import stack  # noqa: E402
import wrk  # noqa: E402

PASSWORD = "correct horse battery staple"
TARGETS = 200


def seed(base: str) -> str:
    with httpx.Client(base_url=base, timeout=30) as client:

        def register(name: str) -> dict:
            response = client.post(
                "/api/v1/auth/register", json={"username": name, "email": f"{name}@bench.example", "password": PASSWORD}
            )
            if response.status_code == 400:  # already there from an earlier run against --url
                response = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
            response.raise_for_status()
            return response.json()

        token = register("bench_reader")["access"]
        for i in range(TARGETS):
            register(f"bench_t{i}")
    return token


def measure(base: str, seconds: int, connections: int) -> list[wrk.Result]:
    token = seed(base)
    auth = {"Authorization": f"Bearer {token}"}
    login_lua = wrk.post_json_lua(f'\'{{"username":"bench_reader","password":"{PASSWORD}"}}\'')
    follow_lua = f"""
wrk.method = "POST"
math.randomseed(os.time())
request = function()
  return wrk.format(nil, "/api/v1/users/bench_t" .. math.random(0, {TARGETS - 1}) .. "/follow")
end
"""
    return [
        wrk.run("GET /users/me", f"{base}/api/v1/users/me", headers=auth, seconds=seconds, connections=connections),
        wrk.run("POST /users/{u}/follow", base, headers=auth, lua=follow_lua, seconds=seconds, connections=connections),
        wrk.run(
            "POST /auth/login (Argon2id)",
            f"{base}/api/v1/auth/login",
            lua=login_lua,
            seconds=seconds,
            connections=min(connections, 4),
            timeout=30,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="measure a running users service (or the gateway) instead")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk.require_wrk()
    if args.url:
        results = measure(args.url.rstrip("/"), args.seconds, args.connections)
    else:
        os.environ.update(
            {"THROTTLE_LOGIN_IP": "1000000/min", "THROTTLE_LOGIN_ACCOUNT": "1000000/min", "THROTTLE_REGISTER_IP": "1000000/min"}
        )
        with stack.temporary_system("bench-users-", services=["users"], port_offset=40) as ctx:
            supervisor = stack.Supervisor([stack.gunicorn(ctx, "users", 0)], stream_logs=False, log_dir=ctx.run_dir)
            try:
                supervisor.start_all()
                supervisor.wait_ready()
                results = measure(ctx.service_urls("users")[0], args.seconds, args.connections)
            finally:
                supervisor.stop_all()
    print(
        f"\nusers service, wrk -t2 -c{args.connections} -d{args.seconds}s"
        f" ({os.cpu_count()} cores, load generator on the same machine)"
    )
    for result in results:
        print(result.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
