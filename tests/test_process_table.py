"""One process table (deploy/processes.yaml): `make run` (dev/stack.py), docker-compose.yml and
deploy/k8s each run every process it declares, with its command, and give it every variable it
declares; the declared variables are all a service's real settings need outside dev mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
import stack  # noqa: E402

TABLE = yaml.safe_load((ROOT / "deploy" / "processes.yaml").read_text())
PROCESSES: dict[str, dict] = TABLE["processes"]
SERVICES = ["users", "feed", "notifications"]


def required_env(name: str) -> set[str]:
    spec = PROCESSES[name]
    return set(spec["env"]) | (set(TABLE["service_env"]) if spec.get("service") else set())


def normalise(name: str, argv: list[str]) -> list[str]:
    """The argv without the per-environment options the table names (and their values), with the
    virtualenv's interpreter written as the image writes it."""
    if argv[:1] == [stack.PYTHON]:
        argv = argv[2:] if argv[1:2] == ["-m"] and argv[2:3] in (["gunicorn"], ["celery"]) else ["python", *argv[1:]]
    aliases = {"-c": "--concurrency", "-l": "--loglevel", "-s": "--schedule"}
    options = set(PROCESSES[name].get("options", []))
    out, skip = [], False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        option = arg.split("=", 1)[0]
        option = aliases.get(option, option) if not (option == "-c" and argv[:1] == ["gunicorn"]) else option
        if option in options:
            skip = "=" not in arg and index + 1 < len(argv)
            continue
        out.append(arg)
    return out


def dockerfile(name: str) -> Path:
    service = PROCESSES[name].get("service")
    return ROOT / ("gateway/Dockerfile" if service is None else f"services/{service}/Dockerfile")


def image_cmd(name: str) -> list[str]:
    return json.loads(re.search(r"^CMD (\[.*\])$", dockerfile(name).read_text(), re.M).group(1))


def image_env(name: str) -> set[str]:
    """Variables the image itself sets (ENV lines of its runtime stage)."""
    runtime = re.split(r"^FROM", dockerfile(name).read_text(), flags=re.M)[-1]
    names: set[str] = set()
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", runtime, re.M):
        names |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", block))
    return names


# --- the table itself -------------------------------------------------------------------------


def _settings_env(service: str) -> dict[str, str]:
    values = {
        "DATABASE_URL": f"postgresql://{service}:pw@127.0.0.1:9/social",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DJANGO_SECRET_KEY": "k" * 40 + "-settings-check",
        "JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
        "SERVICE_NAME": service,
        "JWT_SIGNING_KEYS": "k1=/nonexistent.pem",
        "USERS_URL": "http://127.0.0.1:9",
        "METRICS_PORT": "9100",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",
        "SERVICE_SIGNING_KEYS": f"{service}-k1=/nonexistent.pem",
        "SERVICE_PUBLIC_KEYS": "/nonexistent.json",
    }
    keep = {"PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    declared = set().union(*(required_env(n) for n, s in PROCESSES.items() if s.get("service") == service))
    return env | {name: values[name] for name in declared}


@pytest.mark.parametrize("service", SERVICES)
def test_declared_variables_are_all_the_settings_need(service):
    """Production settings (no DJANGO_DEV) load with only the table's variables set: none missing."""
    load = "import django; django.setup(); from django.conf import settings; print(settings.SERVICE_NAME)"
    env = {**_settings_env(service), "DJANGO_SETTINGS_MODULE": f"{service}_service.settings"}
    result = subprocess.run(
        [sys.executable, "-c", load], cwd=ROOT / "services" / service, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == service


def test_table_covers_every_service_process_kind():
    for service in SERVICES:
        assert {service, f"{service}-worker", f"{service}-relay", f"{service}-beat"} <= set(PROCESSES)
    assert "gateway" in PROCESSES


# --- make run ---------------------------------------------------------------------------------


def make_run_plan(tmp_path: Path, replicas: int = 2) -> list[stack.Proc]:
    ctx = stack.Context(
        admin_database_url="postgresql://postgres@127.0.0.1:1/postgres",
        redis_url="redis://127.0.0.1:1/0",
        service_database_urls={s: f"postgresql://{s}@127.0.0.1:1/social" for s in SERVICES},
        run_dir=tmp_path,
        replicas=replicas,
    )
    return stack.plan(ctx)


def make_run_processes(tmp_path: Path) -> dict[str, stack.Proc]:
    procs = {}
    for proc in make_run_plan(tmp_path):  # replicas are users-0, users-1: one table entry
        name = re.sub(r"-\d+$", "", proc.name)
        procs.setdefault(name, proc)
    return procs


def test_make_run_gives_each_replica_its_share_of_the_cores(tmp_path, monkeypatch):
    """Every replica of every service shares this machine's cores: workers per replica are the
    cores divided by the replicas, at least one; a GUNICORN_WORKERS set by hand wins."""
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    for cores, replicas, workers in ((2, 2, "1"), (1, 2, "1"), (8, 2, "4"), (2, 1, "2")):
        monkeypatch.setattr(stack.os, "cpu_count", lambda cores=cores: cores)
        apis = [p for p in make_run_plan(tmp_path, replicas) if p.cmd[1:3] == ["-m", "gunicorn"]]
        assert len(apis) == len(SERVICES) * replicas
        assert {p.env["GUNICORN_WORKERS"] for p in apis} == {workers}, (cores, replicas)
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    procs = make_run_processes(tmp_path)
    assert {procs[s].env["GUNICORN_WORKERS"] for s in SERVICES} == {"3"}


def test_make_run_runs_the_table(tmp_path):
    procs = make_run_processes(tmp_path)
    assert set(procs) == set(PROCESSES)
    for name, proc in procs.items():
        assert normalise(name, proc.cmd) == PROCESSES[name]["command"], name
        missing = required_env(name) - set(proc.env)
        assert not missing, (name, missing)


# --- compose ----------------------------------------------------------------------------------


def test_compose_runs_the_table():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    long_running = {name for name, spec in services.items() if "build" in spec and spec.get("restart") != "no"}
    assert long_running == set(PROCESSES)
    for name in PROCESSES:
        spec = services[name]
        assert normalise(name, spec.get("command") or image_cmd(name)) == PROCESSES[name]["command"], name
        missing = required_env(name) - set(spec.get("environment", {})) - image_env(name)
        assert not missing, (name, missing)


# --- Kubernetes -------------------------------------------------------------------------------


def k8s_docs() -> list[dict]:
    """The app's objects and the per-environment Secrets and key set they read (deploy/k8s/environment)."""
    k8s = ROOT / "deploy" / "k8s"
    docs = []
    for path in sorted([*k8s.glob("*.yaml"), *(k8s / "environment").glob("*.yaml")]):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_runs_the_table():
    docs = k8s_docs()
    data = {
        (d["kind"], d["metadata"]["name"]): {**d.get("data", {}), **d.get("stringData", {})}
        for d in docs
        if d["kind"] in {"ConfigMap", "Secret"}
    }
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == set(PROCESSES)
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert normalise(name, container.get("command") or image_cmd(name)) == PROCESSES[name]["command"], name
        env = {e["name"] for e in container.get("env", [])} | image_env(name)
        for source in container.get("envFrom", []):
            kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
            env |= set(data[(kind, ref["name"])])
        missing = required_env(name) - env
        assert not missing, (name, missing)


# --- the test catches drift ----------------------------------------------------------------------


def test_normalise_keeps_what_differs():
    """A different command is not hidden by the comparison: only the declared options go."""
    worker = ["celery", "-A", "feed_service", "worker", "-Q", "feed", "--pool", "solo", "--without-gossip", "--without-mingle"]
    assert normalise("feed-worker", [*worker, "-l", "DEBUG", "--loglevel", "INFO"]) == worker
    assert normalise("feed-worker", [stack.PYTHON, "-m", *worker, "--loglevel=WARNING"]) == worker
    assert normalise("feed-worker", [*worker, "-c", "2"]) != worker  # concurrency is no per-environment option
    assert normalise("feed-worker", [*worker[:5], "notifications", *worker[6:]]) != worker
    assert normalise("feed-relay", [stack.PYTHON, "manage.py", "events_relay"]) == ["python", "manage.py", "events_relay"]
    api = ["gunicorn", "-c", "python:shared.gunicorn_conf", "feed_service.wsgi"]
    assert normalise("feed", api) == PROCESSES["feed"]["command"]
