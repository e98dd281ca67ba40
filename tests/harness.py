"""Real processes for system tests: start, SIGKILL, restart, stop (process groups, nothing left behind)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from shared import testing as polling

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Proc:
    def __init__(self, name: str, cmd: list[str], *, cwd: Path, env: dict[str, str], log_dir: Path):
        self.name, self.cmd, self.cwd, self.env, self.log_dir = name, cmd, cwd, env, log_dir
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown handler runs, in-flight work is cut off."""
        if self.popen and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return (self.log_dir / f"{self.name}.log").read_text(errors="replace")


def celery_worker(app: str, queue: str, concurrency: int = 2) -> list[str]:
    """The command of a service's Celery worker as the process table runs it (prefork, no
    mingle/gossip): for system tests that start workers themselves."""
    return [PYTHON, "-m", "celery", "-A", app, "worker", "-Q", queue, "-c", str(concurrency),
            "--pool", "prefork", "-l", "INFO", "--without-mingle", "--without-gossip"]  # fmt: skip


def wait_until(predicate, *, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """`shared.testing.wait_until` with the system tests' defaults (processes start slowly)."""
    return polling.wait_until(predicate, timeout=timeout, interval=interval, what=what)
