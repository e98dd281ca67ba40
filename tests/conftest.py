"""System-test fixtures: the real processes `make run` starts, on shifted ports.

dev/testrun.py provides the infrastructure through the environment (ADMIN_DATABASE_URL,
<SERVICE>_DATABASE_URL, REDIS_URL); the `system` fixture starts every process of
dev/stack.py's plan (gunicorn replicas, workers, relays, the gateway) once per session.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
import infra  # noqa: E402
import stack  # noqa: E402

PORT_OFFSET = infra.claim_port_offset()  # held for the session: another run on this machine takes another block


def _relaxed_routes(run_dir: Path) -> Path:
    """The real route table with rate limits raised: system tests register many users from one IP.
    (Rate limiting itself is tested in gateway/tests/test_ratelimit.py.)"""
    table = yaml.safe_load((ROOT / "gateway" / "routes.yaml").read_text())
    generous = {"rate": 10_000, "burst": 10_000}
    table["defaults"]["ratelimit"] = {"ip": generous, "user": generous}
    for route in table["routes"]:
        if "ratelimit" in route:
            route["ratelimit"] = {"name": route["ratelimit"].get("name", "relaxed"), "ip": generous}
    path = run_dir / "routes.yaml"
    path.write_text(yaml.safe_dump(table))
    return path


def _context(run_dir: Path) -> stack.Context:
    missing = [name for name in ("ADMIN_DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        pytest.exit(f"system tests need {missing}: run them through `make test` / dev/testrun.py", returncode=2)
    urls = {svc: os.environ[f"{svc.upper()}_DATABASE_URL"] for svc in stack.SERVICES}
    return stack.Context(
        admin_database_url=os.environ["ADMIN_DATABASE_URL"],
        redis_url=os.environ["REDIS_URL"],
        service_database_urls=urls,
        run_dir=run_dir,
        replicas=2,
        port_offset=PORT_OFFSET,
        extra_env={
            "THROTTLE_LOGIN_IP": "1000/min",
            "THROTTLE_REGISTER_IP": "1000/min",
            "GATEWAY_ROUTES": str(_relaxed_routes(run_dir)),
            **_tracing_env(run_dir),
        },
        # an author with three or more followers fans out through feed.fanout_deliver tasks, one per
        # page of two follower ids (the path of authors above FANOUT_INLINE and FANOUT_PAGE, 1000 and
        # 5000 by default), so system tests see that path and its spans (tests/test_system_tracing.py);
        # fewer followers: inline in the handler, as for most authors
        component_env={"feed": {"FANOUT_INLINE": "2", "FANOUT_PAGE": "2"}},
    )


def _tracing_env(run_dir: Path) -> dict[str, str]:
    """Tracing on in every process, spans to JSON-lines files under run_dir/traces (the SDK's
    console exporter into a file), sampling ratio 0: only a request whose trusted proxy sent a
    sampled traceparent is recorded (tests/test_system_tracing.py); the rest carry trace ids in
    their log lines without being exported."""
    return {
        "OTEL_TRACES_EXPORTER": "file",
        "OTEL_TRACES_FILE_DIR": str(run_dir / "traces"),
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
    }


class System:
    def __init__(self, ctx: stack.Context, supervisor: stack.Supervisor):
        self.ctx = ctx
        self.supervisor = supervisor

    def proc(self, name: str) -> stack.Proc:
        return next(p for p in self.supervisor.procs if p.name == name)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ctx.gateway_port}"

    def service_url(self, service: str, replica: int = 0) -> str:
        return self.ctx.service_urls(service)[replica]

    def log_tails(self, *names: str, chars: int = 3000) -> str:
        """The last `chars` of each named process's log: what a failed wait on the asynchronous
        pipeline prints, so a failure on a CI machine says where the work stopped."""
        parts = []
        for name in names:
            path = self.ctx.run_dir / f"{name}.log"
            text = path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
            parts.append(f"--- {name}.log (tail) ---\n{text}")
        return "\n".join(parts)


@pytest.fixture(scope="session")
def system():
    with tempfile.TemporaryDirectory(prefix="social-system-") as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)
        ctx = _context(run_dir)
        stack.prepare(ctx)
        supervisor = stack.Supervisor(stack.plan(ctx), stream_logs=False, log_dir=run_dir)
        try:
            supervisor.start_all()
            supervisor.wait_ready(timeout=90)
            yield System(ctx, supervisor)
        finally:
            supervisor.stop_all()


@pytest.fixture(scope="module")
def api(system):
    """An HTTP client for the public API through the system's gateway (base URL /api/v1)."""
    with httpx.Client(base_url=system.gateway_url + "/api/v1", timeout=10) as client:
        yield client
