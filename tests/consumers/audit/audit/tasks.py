"""A test-only task for tests/test_worker_time_limits.py: it stalls, so the worker's time limits
have something to end."""

import time

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded


@shared_task(name="audit.stall", bind=True)
def stall(self, marker: str, seconds: float, hang_once: bool = False) -> None:
    """Sleep `seconds` and record in the Redis list `marker` how the run ended: `soft` when the soft
    limit interrupted it, `done` when it finished. With `hang_once`, the first run (counted in Redis)
    ignores the soft limit and keeps sleeping, as a call the soft limit cannot interrupt would: only
    the hard limit ends it; later runs (its redelivery) finish at once."""
    client = redis.Redis.from_url(self.app.conf.broker_url)
    run = client.incr(f"{marker}:runs")
    if hang_once and run > 1:
        client.rpush(marker, "done")
        return
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        client.rpush(marker, "soft")
        if not hang_once:
            raise
        time.sleep(seconds)
    client.rpush(marker, "done")
