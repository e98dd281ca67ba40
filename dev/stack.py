"""The whole system as local processes: what `make run` starts and what system tests drive.

`plan(ctx)` is the declarative list of processes (one `Proc` each: a gunicorn replica, a Celery
worker, a relay, the gateway); `Supervisor` starts them with prefixed log streaming, waits for
readiness, and stops every one of them (process groups, so no grandchild is left behind). With
`restart=True` (`make run`) it also restarts a process that exits on its own, after a backoff, as an
orchestrator would, and counts it in the status table.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra

ROOT = infra.ROOT
PYTHON = sys.executable
SERVICES = ["users", "feed", "notifications"]
SERVICE_PORTS = {"users": 8100, "feed": 8200, "notifications": 8300}
GATEWAY_PORT, GATEWAY_ADMIN_PORT = 8000, 8001
METRICS_PORT_STEP = {"worker": 90, "relay": 91}  # event processes' /metrics, above any replica port


@dataclass
class Proc:
    name: str
    cmd: list[str]
    cwd: Path
    env: dict[str, str]
    ready_url: str | None = None  # polled until 200; None: started is ready
    url: str | None = None  # shown in the status table
    popen: subprocess.Popen | None = field(default=None, repr=False)
    # supervision (Supervisor(restart=True)): restarts so far, the last exit status, the backoff
    restarts: int = 0
    last_exit: int | None = None
    held: bool = False  # stopped on purpose (stop(), restart()): not restarted by the supervisor
    started_at: float = 0.0
    failures: int = 0  # consecutive quick exits: the backoff doubles with each
    restart_at: float | None = None  # a restart is due at this time.monotonic()

    def process(self) -> subprocess.Popen:
        """The process start() launched (running or exited); an error before it was started."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen


@dataclass
class Context:
    """What every process needs to know: where the infrastructure is and how many replicas."""

    admin_database_url: str
    redis_url: str
    service_database_urls: dict[str, str]
    run_dir: Path
    replicas: int = 2
    port_offset: int = 0  # system tests shift every port so they never collide with `make run`
    extra_env: dict[str, str] = field(default_factory=dict)
    # component (service or "gateway") -> the checkout its code runs from, and extra environment for
    # it (dev/cross_version.py runs a release from its tag's worktree); default: this checkout
    roots: dict[str, Path] = field(default_factory=dict)
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)
    pythons: dict[str, str] = field(default_factory=dict)

    def root(self, component: str) -> Path:
        return self.roots.get(component, ROOT)

    def python(self, component: str) -> str:
        return self.pythons.get(component, PYTHON)

    def port(self, service: str, replica: int) -> int:
        return SERVICE_PORTS[service] + replica + self.port_offset

    def metrics_port(self, service: str, process: str) -> int:
        """/metrics of a service's Celery worker (port + 90) or outbox relay (port + 91)."""
        return SERVICE_PORTS[service] + METRICS_PORT_STEP[process] + self.port_offset

    def service_urls(self, service: str) -> list[str]:
        return [f"http://127.0.0.1:{self.port(service, i)}" for i in range(self.replicas)]

    @property
    def gateway_port(self) -> int:
        return GATEWAY_PORT + self.port_offset

    @property
    def gateway_admin_port(self) -> int:
        return GATEWAY_ADMIN_PORT + self.port_offset


def available_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name / "manage.py").exists()]


def service_env(ctx: Context, service: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_DEV": "1",
        "DJANGO_SETTINGS_MODULE": f"{service}_service.settings",
        "DATABASE_URL": ctx.service_database_urls[service],
        "REDIS_URL": ctx.redis_url,
        "JWT_SIGNING_KEYS": f"dev={ctx.run_dir / 'keys' / 'users-dev.pem'}",
        "JWKS_URL": f"{ctx.service_urls('users')[0]}/.well-known/jwks.json",
        "SERVICE_SIGNING_KEYS": f"{service}-dev={ctx.run_dir / 'keys' / f'service-{service}.pem'}",
        "SERVICE_PUBLIC_KEYS": str(ctx.run_dir / "keys" / "service-keys.json"),
        "DJANGO_SECRET_KEY": "dev-secret-key-not-for-production-" + "x" * 20,
        "PYTHONUNBUFFERED": "1",
        # every replica, comma-separated: shared.http.ServiceClient takes them in turn (compose and
        # Kubernetes give one load-balanced name instead)
        **{f"{name.upper()}_URL": ",".join(ctx.service_urls(name)) for name in SERVICES},
        **ctx.extra_env,
        **ctx.component_env.get(service, {}),
    }
    return env


def workers_per_replica(ctx: Context) -> int:
    """gunicorn workers per replica when GUNICORN_WORKERS is not set: the machine's cores shared by
    a service's replicas, at least one (2 cores, 2 replicas: one each). Every replica of every
    service runs on the same machine here, unlike in compose or Kubernetes (2 per replica, a
    replica per container): on 2 cores, one worker per replica took ~10 % less CPU per request of
    the mix than two (docs/performance.md)."""
    return max(1, (os.cpu_count() or 1) // ctx.replicas)


def gunicorn(ctx: Context, service: str, replica: int) -> Proc:
    port = ctx.port(service, replica)
    metrics_dir = ctx.run_dir / "metrics" / f"{service}-{replica}"
    env = {
        **service_env(ctx, service),
        "BIND": f"127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "SERVICE_NAME": service,
    }
    env.setdefault("GUNICORN_WORKERS", str(workers_per_replica(ctx)))
    return Proc(
        name=f"{service}-{replica}",
        cwd=ctx.root(service) / "services" / service,
        env=env,
        cmd=[ctx.python(service), "-m", "gunicorn", "-c", "python:shared.gunicorn_conf", f"{service}_service.wsgi"],
        ready_url=f"http://127.0.0.1:{port}/health/ready",
        url=f"http://127.0.0.1:{port}",
    )


def gateway(ctx: Context) -> Proc | None:
    if not (ROOT / "gateway" / "__main__.py").exists() and not (ROOT / "gateway" / "gateway" / "__main__.py").exists():
        return None
    upstreams = ";".join(
        f"{name}=" + ",".join(f"127.0.0.1:{ctx.port(name, i)}" for i in range(ctx.replicas)) for name in available_services()
    )
    env = {
        **os.environ,
        "GATEWAY_PORT": str(ctx.gateway_port),
        "GATEWAY_ADMIN_PORT": str(ctx.gateway_admin_port),
        "GATEWAY_UPSTREAMS": upstreams,
        "REDIS_URL": ctx.redis_url,
        "PYTHONUNBUFFERED": "1",
        "JWKS_URL": f"{ctx.service_urls('users')[0]}/.well-known/jwks.json",
        **ctx.extra_env,
        **ctx.component_env.get("gateway", {}),
    }
    return Proc(
        name="gateway",
        cwd=ctx.root("gateway"),
        env=env,
        cmd=[ctx.python("gateway"), "-m", "gateway"],
        ready_url=f"http://127.0.0.1:{ctx.gateway_admin_port}/health/ready",
        url=f"http://127.0.0.1:{ctx.gateway_port}",
    )


# Every service has the same background processes: a Celery worker on its own queue (event
# handlers, its tasks; the solo pool: tasks run in the worker's own process, docs/events.md), the
# outbox relay (its events → each consumer's queue) and one beat (pruning, partitions, sweeps).
# Per-service extra environment:
EXTRA_ENV = {"notifications": {"PUSH_PROVIDER": "log"}}


def background_processes(ctx: Context, service: str) -> list[Proc]:
    env = {**service_env(ctx, service), "SERVICE_NAME": service, **EXTRA_ENV.get(service, {}), **ctx.extra_env}
    cwd = ctx.root(service) / "services" / service
    python = ctx.python(service)
    app = f"{service}_service"
    worker_port, relay_port = ctx.metrics_port(service, "worker"), ctx.metrics_port(service, "relay")
    return [
        Proc(
            name=f"{service}-worker",
            cwd=cwd,
            env={**env, "METRICS_PORT": str(worker_port)},
            cmd=[
                python,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "-Q",
                service,
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            url=f"http://127.0.0.1:{worker_port}/metrics",
        ),
        Proc(
            name=f"{service}-relay",
            cwd=cwd,
            env={**env, "METRICS_PORT": str(relay_port)},
            cmd=[python, "manage.py", "events_relay"],
            url=f"http://127.0.0.1:{relay_port}/metrics",
        ),
        Proc(
            name=f"{service}-beat",
            cwd=cwd,
            env=env,
            cmd=[
                python,
                "-m",
                "celery",
                "-A",
                app,
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(ctx.run_dir / f"{service}-celerybeat-schedule"),
            ],
        ),
    ]


def with_prefork(proc: Proc, processes: int) -> Proc:
    """A worker of background_processes() run with Celery's prefork pool of `processes` children
    instead of the solo pool (benchmarks comparing the two)."""
    at = proc.cmd.index("--pool")
    proc.cmd[at + 1 : at + 2] = ["prefork", "-c", str(processes)]
    return proc


def worker_pool(proc: Proc) -> str:
    """The pool a worker Proc runs, as text: `solo`, `prefork -c 2`."""
    at = proc.cmd.index("--pool")
    return " ".join(proc.cmd[at + 1 : at + 4 if proc.cmd[at + 1] == "prefork" else at + 2])


def plan(ctx: Context) -> list[Proc]:
    procs: list[Proc] = []
    for service in available_services():
        procs += [gunicorn(ctx, service, i) for i in range(ctx.replicas)]
        if (ROOT / "services" / service / f"{service}_service" / "celery.py").exists():
            procs += background_processes(ctx, service)
    edge = gateway(ctx)
    if edge is not None:
        procs.append(edge)
    return procs


def prepare(ctx: Context, services: list[str] | None = None) -> None:
    """Keys and migrations (each service migrates as its own role, into its own schema)."""
    from shared.keygen import generate_key_file
    from shared.service_keys import write_dev_keys

    generate_key_file(ctx.run_dir / "keys" / "users-dev.pem")
    write_dev_keys(ctx.run_dir / "keys", SERVICES)  # one service-credential key per service + the key set
    for service in services or available_services():
        subprocess.run(
            [ctx.python(service), "manage.py", "migrate", "--no-input", "-v", "0"],
            check=True,
            cwd=ctx.root(service) / "services" / service,
            env=service_env(ctx, service),
        )


def balancer_settle(ctx: Context) -> float:
    """Seconds after a replica turned ready by which every gateway worker has health-checked it and
    put it back in rotation: one check interval (GATEWAY_HEALTH_INTERVAL, 5 s by default) plus the
    longest a check may take (2 s)."""
    interval = ctx.component_env.get("gateway", {}).get("GATEWAY_HEALTH_INTERVAL") or ctx.extra_env.get(
        "GATEWAY_HEALTH_INTERVAL", os.environ.get("GATEWAY_HEALTH_INTERVAL", "5")
    )
    return float(interval) + 2.0


def gateway_in_rotation(admin_port: int) -> Callable[[Proc], bool]:
    """in_rotation for Supervisor.rolling_restart: whether every gateway worker has the replica (a
    gunicorn Proc) in rotation, from `gateway_upstream_replica_up` on the gateway's admin port
    (`ctx.gateway_admin_port`; the gauge is the minimum over the gateway's live workers)."""

    def check(proc: Proc) -> bool:
        addr = (proc.url or "").removeprefix("http://")
        try:
            text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return False
        pattern = rf'^gateway_upstream_replica_up{{[^}}]*replica="{re.escape(addr)}"[^}}]*}} (\S+)$'
        values = [float(v) for v in re.findall(pattern, text, re.M)]
        return bool(values) and min(values) == 1.0

    return check


def describe_exit(code: int | None) -> str:
    """A Popen return code as the status table shows it: `exit 1`, `SIGKILL`."""
    if code is None:
        return "-"
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"exit {code}"


class Supervisor:
    """Starts, watches and stops the processes of a plan.

    restart: a process that exits while not stopped on purpose is started again after a backoff of
    `backoff` seconds, doubled after each exit that follows a run shorter than `stable` seconds, at
    most `max_backoff` (Kubernetes' CrashLoopBackOff, shorter). `on_event(proc, message)` hears of
    every exit and restart (make run prints them).
    """

    def __init__(
        self,
        procs: list[Proc],
        *,
        stream_logs: bool = True,
        log_dir: Path | None = None,
        restart: bool = False,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable: float = 30.0,
        on_event=None,
    ):
        self.procs = procs
        self.stream_logs = stream_logs
        self.log_dir = log_dir
        self.restart_enabled = restart
        self.backoff, self.max_backoff, self.stable = backoff, max_backoff, stable
        self.on_event = on_event
        self._print_lock = threading.Lock()
        self._lock = threading.RLock()  # the monitor's decisions vs stop()/restart()
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None
        width = max((len(p.name) for p in procs), default=8)
        self._width = width

    def start(self, proc: Proc) -> None:
        if proc.name.split("-")[0] in SERVICES and proc.env.get("PROMETHEUS_MULTIPROC_DIR"):
            metrics_dir = Path(proc.env["PROMETHEUS_MULTIPROC_DIR"])
            metrics_dir.mkdir(parents=True, exist_ok=True)
            for stale in metrics_dir.glob("*.db"):
                stale.unlink()
        with self._lock:
            proc.popen = subprocess.Popen(
                proc.cmd,
                cwd=proc.cwd,
                env=proc.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                text=True,
                bufsize=1,
            )
            proc.held, proc.restart_at, proc.started_at = False, None, time.monotonic()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _event(self, proc: Proc, message: str) -> None:
        if self.on_event is not None:
            self.on_event(proc, message)

    def _watch(self) -> None:
        while not self._closing.wait(0.2):
            for proc in self.procs:
                with self._lock:
                    if self._closing.is_set() or proc.held or proc.popen is None:
                        continue
                    now = time.monotonic()
                    if proc.restart_at is None and proc.popen.poll() is not None:
                        proc.last_exit = proc.popen.returncode
                        # what the process left behind in its group (a SIGKILLed gunicorn's workers)
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(proc.popen.pid, signal.SIGKILL)
                        proc.failures = 0 if now - proc.started_at >= self.stable else proc.failures + 1
                        delay = min(self.max_backoff, self.backoff * 2 ** max(0, proc.failures - 1))
                        proc.restart_at = now + delay
                        self._event(proc, f"exited ({describe_exit(proc.last_exit)}); restarting in {delay:g} s")
                    elif proc.restart_at is not None and now >= proc.restart_at:
                        proc.restarts += 1
                        self.start(proc)
                        self._event(proc, f"restarted (pid {proc.popen.pid}, restart {proc.restarts})")

    def _pump(self, proc: Proc) -> None:
        log = open(self.log_dir / f"{proc.name}.log", "a") if self.log_dir else None  # noqa: SIM115
        try:
            for line in proc.process().stdout or ():
                if log:
                    log.write(line)
                    log.flush()
                if self.stream_logs:
                    with self._print_lock:
                        sys.stdout.write(f"{proc.name:<{self._width}} | {line}")
                        sys.stdout.flush()
        finally:
            if log:
                log.close()

    def start_all(self) -> None:
        for proc in self.procs:
            self.start(proc)
        if self.restart_enabled and self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._monitor.start()

    def wait_ready(self, timeout: float = 60.0, procs: list[Proc] | None = None) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            for proc in procs or self.procs:
                while proc.ready_url:
                    if proc.process().poll() is not None:
                        raise RuntimeError(f"{proc.name} exited with {proc.process().returncode}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(proc.ready_url).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{proc.name} not ready at {proc.ready_url}")
                    time.sleep(0.1)

    def health(self, proc: Proc) -> str:
        if proc.restart_at is not None:
            return f"restarting in {max(0.0, proc.restart_at - time.monotonic()):.0f} s"
        if proc.popen is None or proc.popen.poll() is not None:
            return "exited"
        if not proc.ready_url:
            return "running"
        try:
            return "ready" if httpx.get(proc.ready_url, timeout=1.0).status_code == 200 else "not ready"
        except httpx.HTTPError:
            return "down"

    def status_table(self) -> str:
        rows = [("process", "pid", "url", "health", "restarts", "last exit")]
        rows += [
            (
                p.name,
                str(p.popen.pid if p.popen else "-"),
                p.url or "-",
                self.health(p),
                str(p.restarts),
                describe_exit(p.last_exit),
            )
            for p in self.procs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows)

    @staticmethod
    def signal(proc: Proc, sig: int) -> None:
        if proc.popen is not None and proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, sig)

    def stop(self, proc: Proc, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL after timeout; the supervisor leaves it stopped."""
        with self._lock:
            proc.held, proc.restart_at = True, None
        self.signal(proc, signal.SIGTERM)
        if proc.popen is None:
            return
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(proc, signal.SIGKILL)
            proc.popen.wait()
        # the group may still hold children (gunicorn workers); make sure none outlive us
        self.signal(proc, signal.SIGKILL)

    def restart(self, proc: Proc, timeout: float = 20.0) -> None:
        """Stop (SIGTERM: a graceful drain) and start again, as one step of a rolling restart."""
        self.stop(proc, timeout=timeout)
        self.start(proc)

    def rolling_restart(
        self,
        procs: list[Proc],
        *,
        settle: float,
        ready_timeout: float = 120.0,
        in_rotation: Callable[[Proc], bool] | None = None,
    ) -> None:
        """Restart `procs` one at a time, as an orchestrator's rolling update does: stop (SIGTERM,
        a graceful drain), start, wait until ready, then until the balancer sends to it again before
        the next one. A balancer that health-checks its replicas (the gateway, every
        GATEWAY_HEALTH_INTERVAL s) puts a restarted replica back in rotation only after a passing
        check; stopping the next replica before that leaves it nothing in rotation but the replica
        going away, and its requests fail. `in_rotation(proc)` asks the balancer
        (`gateway_in_rotation(ctx.gateway_admin_port)`); it is polled for up to `ready_timeout` s (a check that times out
        on a loaded machine is retried at the next interval). Without it, `settle` seconds are waited
        (Kubernetes' minReadySeconds; `balancer_settle(ctx)` gives the gateway's delay)."""
        for proc in procs:
            self.restart(proc)
            self.wait_ready(timeout=ready_timeout, procs=[proc])
            if in_rotation is None:
                time.sleep(settle)
                continue
            deadline = time.monotonic() + ready_timeout
            while not in_rotation(proc):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.name} ready but not back in the balancer's rotation after {ready_timeout:.0f} s")
                time.sleep(0.2)

    def stop_all(self) -> None:
        with self._lock:
            self._closing.set()
            for proc in self.procs:
                proc.held, proc.restart_at = True, None
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        for proc in self.procs:
            self.signal(proc, signal.SIGTERM)
        for proc in reversed(self.procs):
            self.stop(proc)


@contextlib.contextmanager
def temporary_system(
    prefix: str, *, services: list[str], port_offset: int, replicas: int = 1, extra_env: dict[str, str] | None = None
):
    """A throwaway Postgres + Redis (or DATABASE_URL/REDIS_URL), bootstrapped and migrated, for a
    benchmark: yields the Context; nothing is started yet and everything is gone afterwards."""
    import tempfile

    from shared.db_bootstrap import bootstrap

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)  # the unprivileged postgres user must reach its data dir
        with open(run_dir / "infra.log", "w") as log, infra.embedded(run_dir, log=log, ephemeral=True) as (admin_url, redis_url):
            urls = bootstrap(admin_url, "social_bench", {name: f"{name}-bench" for name in SERVICES})
            ctx = Context(
                admin_database_url=admin_url,
                redis_url=redis_url,
                service_database_urls=urls,
                run_dir=run_dir,
                replicas=replicas,
                port_offset=port_offset,
                extra_env=extra_env or {},
            )
            prepare(ctx, services)
            yield ctx
