"""Task time limits and shutdown in a worker that runs the solo pool (the process table's), where
Celery enforces no time limit (shared.events.celery_app.InlineTimeLimits does): a task past the
soft limit gets SoftTimeLimitExceeded and the worker goes on with the next; a task that outlives
the hard limit ends the worker (status 70), and its message, never acknowledged, is delivered again
and run once more by the restarted worker; SIGTERM lets the task in hand finish and acknowledge it.
Real processes: the test-only consumer's worker (tests/consumers/audit, task `audit.stall`) on a
Redis of the test's own."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests import harness
from tests.harness import ROOT, Proc, celery_worker, wait_until

AUDIT_DIR = ROOT / "tests" / "consumers" / "audit"
SOFT, HARD, VISIBILITY = 4, 6, 10


class Stack:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.redis = harness.OwnRedis(run_dir)
        self.client = redis.Redis.from_url(self.redis.url)
        self.env = {
            **harness.stack_env(
                self.redis.url,
                CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY),
                CELERY_TASK_TIME_LIMIT=str(HARD),
                CELERY_TASK_SOFT_TIME_LIMIT=str(SOFT),
            ),
            # the task touches no database: the worker never connects to this one
            "DATABASE_URL": "postgresql://audit:unused@127.0.0.1:9/unused",
            "DJANGO_SETTINGS_MODULE": "audit_service.settings",
            "SERVICE_NAME": "audit",
            "PYTHONPATH": os.pathsep.join([str(AUDIT_DIR), os.environ.get("PYTHONPATH", "")]),
        }
        self.sender = Celery("time-limits-test", broker=self.redis.url)
        self.worker: Proc | None = None

    def start_worker(self) -> Proc:
        command = celery_worker("audit_service", "audit")
        self.worker = Proc("audit-worker", command, cwd=AUDIT_DIR, env=self.env, log_dir=self.run_dir)
        return self.worker.start()

    def stall(self, seconds: float, *, hang_once: bool = False) -> str:
        marker = f"stall:{uuid.uuid4().hex[:8]}"
        self.sender.send_task("audit.stall", args=[marker, seconds, hang_once], queue="audit")
        return marker

    def outcomes(self, marker: str) -> list[str]:
        return [v.decode() for v in self.client.lrange(marker, 0, -1)]

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.sender.close()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack():
    with harness.own_stack("social-limits-", Stack) as s:
        yield s


def test_a_task_past_the_soft_limit_is_interrupted_and_the_worker_goes_on(stack):
    worker = stack.start_worker()
    slow = stack.stall(300)  # would finish ("done") long after the waits below give up
    wait_until(lambda: stack.outcomes(slow) == ["soft"], timeout=120, what="the soft limit interrupting the task")
    quick = stack.stall(0.1)
    wait_until(lambda: stack.outcomes(quick) == ["done"], timeout=30, what="the next task run by the same worker")
    assert worker.popen is not None and worker.popen.poll() is None
    assert stack.outcomes(slow) == ["soft"]  # interrupted, never finished
    assert "SoftTimeLimitExceeded" in worker.log()


def test_a_task_past_the_hard_limit_ends_the_worker_and_runs_again_after_a_restart(stack):
    if stack.worker is None or stack.worker.popen is None or stack.worker.popen.poll() is not None:
        stack.start_worker()
    worker = stack.worker
    assert worker is not None and worker.popen is not None
    marker = stack.stall(300, hang_once=True)  # ignores the soft limit, then sleeps on
    wait_until(lambda: worker.popen.poll() is not None, timeout=120, what="the worker ending at the hard limit")
    assert worker.popen.returncode == 70  # the hard limit's exit (a finished task does not end a worker)
    assert stack.outcomes(marker) == ["soft"]
    assert "task exceeded the hard time limit" in worker.log()
    # the message was never acknowledged: it comes back after the visibility timeout, once
    stack.start_worker()
    wait_until(lambda: stack.outcomes(marker) == ["soft", "done"], timeout=VISIBILITY + 60, what="the task delivered again")
    assert int(stack.client.get(f"{marker}:runs") or 0) == 2


def test_sigterm_lets_the_running_task_finish_and_acknowledge_it(stack):
    """Warm shutdown with the solo pool: the task in hand completes, its message is acknowledged
    (nothing left in kombu's unacked hash or the queue to come back), and the worker exits 0."""
    if stack.worker is None or stack.worker.popen is None or stack.worker.popen.poll() is not None:
        stack.start_worker()
    worker = stack.worker
    assert worker is not None and worker.popen is not None
    marker = stack.stall(2)  # well within the soft limit
    wait_until(lambda: stack.client.get(f"{marker}:runs") == b"1", timeout=60, what="the task running")
    worker.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: worker.popen.poll() is not None, timeout=60, what="the worker's warm shutdown")
    assert worker.popen.returncode == 0
    assert stack.outcomes(marker) == ["done"]
    assert stack.client.hlen("unacked") == 0 and stack.client.llen("audit") == 0
