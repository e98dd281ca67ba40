"""`python -m shared.healthcheck URL` or `python -m shared.healthcheck --redis`: a container health
check that needs nothing but the image's Python (no curl in the runtime images).

Exit status 0 when URL answers 200 within the timeout (a replica's `/health/ready`, a Celery
worker's or relay's `/metrics` on METRICS_PORT), or, with `--redis`, when REDIS_URL answers PING
(a beat, which serves no port: its only dependency is the broker); 1 otherwise, with the reason on
stderr. Used by the images' HEALTHCHECK, docker-compose.yml and the Kubernetes exec probes.
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT = 2.0


def check_url(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except Exception as exc:  # urllib raises URLError, HTTPError, timeouts, resets
        return f"{url}: {exc}"


def check_redis() -> str | None:
    import redis

    url = os.environ.get("REDIS_URL", "")
    if not url:
        return "REDIS_URL is not set"
    try:
        redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT).ping()
    except Exception as exc:  # any connection or protocol error is unhealthy
        return f"redis: {exc}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shared.healthcheck URL | --redis", file=sys.stderr)
        return 2
    problem = check_redis() if argv[0] == "--redis" else check_url(argv[0])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
