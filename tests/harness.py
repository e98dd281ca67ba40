"""Real processes for system tests: start, SIGKILL, restart, stop (process groups, nothing left
behind), and the set-up of the system tests that run a stack of their own (a run directory, a
Redis of their own, the services' environment, migrations, relays)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from shared import testing as polling

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PASSWORD = "correct horse battery staple"  # every user the system tests register
SERVICES_DIR = ROOT / "services"

sys.path.insert(0, str(ROOT / "dev"))
import infra  # noqa: E402


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


def celery_worker(app: str, queue: str) -> list[str]:
    """The command of a service's Celery worker as the process table runs it (the solo pool, no
    mingle/gossip): for system tests that start workers themselves."""
    return [PYTHON, "-m", "celery", "-A", app, "worker", "-Q", queue,
            "--pool", "solo", "-l", "INFO", "--without-mingle", "--without-gossip"]  # fmt: skip


def register(api: httpx.Client, prefix: str) -> tuple[str, dict[str, str]]:
    """A new user `<prefix>_<random>` registered through the public API: its name and the
    Authorization header of its access token."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    response = api.post("/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return name, {"Authorization": f"Bearer {response.json()['access']}"}


def wait_until(predicate, *, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """`shared.testing.wait_until` with the system tests' defaults (processes start slowly)."""
    return polling.wait_until(predicate, timeout=timeout, interval=interval, what=what)


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


@contextlib.contextmanager
def own_stack(prefix: str, build: Callable[[Path], S]) -> Iterator[S]:
    """A module fixture's body for a system test that runs its own processes: a run directory for
    their logs and data (kept under $EVENTS_TEST_LOG_DIR when that is set, for diagnosis), the
    stack `build(run_dir)` makes there, closed afterwards."""
    keep = os.environ.get("EVENTS_TEST_LOG_DIR")
    with (
        contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix, dir=keep)) if keep else tempfile.TemporaryDirectory(prefix=prefix)
    ) as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)
        stack = build(run_dir)
        try:
            yield stack
        finally:
            stack.close()


class OwnRedis:
    """A Redis of the test's own (dev/infra.py) in the run directory: stopping it disturbs no other test."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "redis"
        self.port = infra.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server = infra.start_redis(self.dir, self.port)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        """Start it again on the same port and data directory."""
        self.server = infra.start_redis(self.dir, self.port)


def stack_env(redis_url: str, **extra: str) -> dict[str, str]:
    """What every process of such a stack shares: development settings, the own Redis as cache and broker."""
    return {
        **os.environ,
        "DJANGO_DEV": "1",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def service_env(common: dict[str, str], service: str, **extra: str) -> dict[str, str]:
    """A service's environment on top of `common`: its test database, settings and name."""
    return {
        **common,
        "DATABASE_URL": os.environ[f"{service.upper()}_DATABASE_URL"],
        "DJANGO_SETTINGS_MODULE": f"{service}_service.settings",
        "SERVICE_NAME": service,
        **extra,
    }


def manage(cwd: Path, env: dict[str, str], *args: str) -> str:
    """`manage.py <args>` in a Django project's directory; its output, or an error that shows it."""
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} in {cwd} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def relay(service: str, env: dict[str, str], run_dir: Path, *, metrics_port: int = 0, name: str = "") -> Proc:
    """The service's outbox relay (not started), polling every 0.5 s."""
    return Proc(
        name or f"{service}-relay",
        [PYTHON, "manage.py", "events_relay", "--poll-interval", "0.5"],
        cwd=SERVICES_DIR / service,
        env={**env, "METRICS_PORT": str(metrics_port)},
        log_dir=run_dir,
    )
