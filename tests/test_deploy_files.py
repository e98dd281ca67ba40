"""The container and Kubernetes descriptions are kept truthful: no Docker engine or cluster runs
here, so these tests check what a reader would: schemas, every process present, probes, replicas,
autoscaling, disruption budgets, PgBouncer in front of Postgres, and a connection budget that fits."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["users", "feed", "notifications"]
K8S_VERSION = "1.31"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


# --- docker compose ------------------------------------------------------------------------

def test_compose_runs_every_process_of_every_service():
    services = compose()["services"]
    for svc in SERVICES:
        assert services[svc]["deploy"]["replicas"] >= 2
        assert services[svc]["build"]["dockerfile"] == f"services/{svc}/Dockerfile"
        assert services[svc]["healthcheck"]["test"][-1].count("/health/ready") == 1
        assert services[f"{svc}-migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
        assert services[f"{svc}-worker"]["command"][:6] == ["celery", "-A", f"{svc}_service", "worker", "-Q", svc]
        assert services[f"{svc}-relay"]["command"] == ["python", "manage.py", "events_relay"]
    for infra in ("postgres", "pgbouncer", "redis", "gateway", "prometheus", "grafana", "db-init"):
        assert infra in services


def test_compose_build_files_exist():
    for name, spec in compose()["services"].items():
        if "build" in spec:
            assert (ROOT / spec["build"]["dockerfile"]).is_file(), name
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)


def test_services_reach_postgres_through_pgbouncer_in_transaction_mode():
    services = compose()["services"]
    for svc in SERVICES:
        env = services[svc]["environment"]
        assert "@pgbouncer:6432/social" in env["DATABASE_URL"] and env["DATABASE_URL"].startswith(f"postgresql://{svc}:")
        assert env["PGBOUNCER"] == "1"  # server-side cursors off
        # relays and migrations need sessions: direct to Postgres
        for direct in (f"{svc}-migrate", f"{svc}-relay"):
            assert "@postgres:5432/social" in services[direct]["environment"]["DATABASE_URL"]
    ini = (ROOT / "deploy/pgbouncer/pgbouncer.ini").read_text()
    assert "pool_mode = transaction" in ini
    users = (ROOT / "deploy/pgbouncer/userlist.txt").read_text()
    assert all(f'"{svc}"' in users for svc in SERVICES)


def _setting(lines: list[str], name: str) -> int:
    return int(next(item.split("=", 1)[1] for item in lines if item.startswith(f"{name}=")))


def test_connection_budget_fits_postgres():
    """docs/scaling.md: PgBouncer's server pools (per role) plus direct sessions fit max_connections."""
    services = compose()["services"]
    command = services["postgres"]["command"]
    max_connections = _setting([c for c in command if "=" in c], "max_connections")
    ini = dict(line.split(" = ", 1) for line in (ROOT / "deploy/pgbouncer/pgbouncer.ini").read_text().splitlines()
               if " = " in line and not line.startswith(";"))
    pooled = len(SERVICES) * (int(ini["default_pool_size"]) + int(ini["reserve_pool_size"]))
    direct = len(SERVICES) * 2  # a relay and a migration per service at most
    reserved = 3 + 10  # superuser_reserved_connections + admin
    assert pooled + direct + reserved <= max_connections
    # and PgBouncer accepts every gunicorn thread of every replica
    env = compose()["x-service-env"]
    threads = sum(services[s]["deploy"]["replicas"] * int(env["GUNICORN_WORKERS"]) * int(env["GUNICORN_THREADS"])
                  for s in SERVICES)
    assert threads <= int(ini["max_client_conn"])


def test_gateway_discovers_replicas_by_dns():
    env = compose()["services"]["gateway"]["environment"]
    assert env["GATEWAY_UPSTREAMS"] == "users=dns:users:8000;feed=dns:feed:8000;notifications=dns:notifications:8000"


def test_gateway_limit_matches_what_a_replica_runs_at_once():
    """routes.yaml's max_outstanding is the services' gunicorn concurrency (workers x threads) in
    compose and Kubernetes: a smaller limit idles threads, a larger one queues inside a replica."""
    limit = yaml.safe_load((ROOT / "gateway" / "routes.yaml").read_text())["defaults"]["max_outstanding"]
    config = next(d for d in k8s_docs() if d["kind"] == "ConfigMap" and "GUNICORN_THREADS" in d.get("data", {}))
    for env in (compose()["x-service-env"], config["data"]):
        assert int(env["GUNICORN_WORKERS"]) * int(env["GUNICORN_THREADS"]) == limit


# --- Kubernetes ----------------------------------------------------------------------------

@pytest.mark.parametrize("doc", k8s_docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_deployment_has_probes_drain_hpa_and_pdb():
    deployments, hpas, pdbs = by_kind("Deployment"), by_kind("HorizontalPodAutoscaler"), by_kind("PodDisruptionBudget")
    for name in [*SERVICES, "gateway"]:
        spec = deployments[name]["spec"]
        container = spec["template"]["spec"]["containers"][0]
        assert spec["replicas"] >= 2
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 20  # > gunicorn graceful_timeout
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name and hpas[name]["spec"]["minReplicas"] >= 2
        assert pdbs[name]["spec"]["minAvailable"] == 1
    for svc in SERVICES:
        assert f"{svc}-worker" in deployments and f"{svc}-relay" in deployments
        assert f"{svc}-worker" in hpas
    assert set(by_kind("Job")) == {f"{svc}-migrate" for svc in SERVICES}


def test_gateway_uses_headless_services_for_discovery():
    services = by_kind("Service")
    for svc in SERVICES:
        assert services[f"{svc}-replicas"]["spec"]["clusterIP"] == "None"
    container = by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_UPSTREAMS"].count("dns:") == 3


def test_every_event_process_exposes_metrics():
    """Workers and relays serve /metrics on METRICS_PORT; compose, Prometheus and Kubernetes agree."""
    services = compose()["services"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {(name, sd["port"]) for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", [])
               for name in sd["names"]}
    deployments = by_kind("Deployment")
    for svc in SERVICES:
        for process in ("worker", "relay"):
            name = f"{svc}-{process}"
            port = int(services[name]["environment"]["METRICS_PORT"])
            assert (name, port) in targets
            pod = deployments[name]["spec"]["template"]
            container = pod["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert int(env["METRICS_PORT"]) == int(pod["metadata"]["annotations"]["prometheus.io/port"])
            assert {"name": "metrics", "containerPort": int(env["METRICS_PORT"])} in container["ports"]


# --- service credentials: one Ed25519 key per service (shared.service_keys) ------------------

def test_compose_gives_each_service_its_own_credential_key():
    spec = compose()
    services = spec["services"]
    files = {name: secret["file"] for name, secret in spec["secrets"].items()}
    keyset_path = "/etc/social/service-keys.json"
    for svc in SERVICES:
        assert files[f"{svc}_service_key"].endswith(f"service-{svc}.pem")
        for proc in (svc, f"{svc}-worker"):  # the processes that call or are called
            env = services[proc]["environment"]
            kid, _, path = env["SERVICE_SIGNING_KEYS"].partition("=")
            assert kid.startswith(f"{svc}-") and path == f"/run/secrets/{svc}_service_key", proc
            assert env["SERVICE_PUBLIC_KEYS"] == keyset_path
            assert {"source": "service_keys", "target": keyset_path} in services[proc]["configs"]
        for name, proc in services.items():  # nobody else can read this service's key
            if f"{svc}_service_key" in proc.get("secrets", []):
                assert name.split("-")[0] == svc, (name, svc)
    assert len(set(files.values())) == len(files)
    assert "SERVICE_TOKEN_SECRET" not in (ROOT / "docker-compose.yml").read_text()


def _mounts(deployment: dict) -> dict[str, str]:
    """volume source (Secret or ConfigMap name) → mount path, for the pod's one container."""
    pod = deployment["spec"]["template"]["spec"]
    sources = {v["name"]: (v.get("secret", {}).get("secretName") or v.get("configMap", {}).get("name"))
               for v in pod.get("volumes", [])}
    (container,) = pod["containers"]
    return {sources[m["name"]]: m["mountPath"] for m in container.get("volumeMounts", [])}


def test_k8s_gives_each_service_its_own_credential_key():
    secrets, configmaps, deployments = by_kind("Secret"), by_kind("ConfigMap"), by_kind("Deployment")
    keyset = yaml.safe_load(configmaps["service-public-keys"]["data"]["service-keys.json"])
    assert set(keyset) == set(SERVICES)
    keyset_path = configmaps["social-config"]["data"]["SERVICE_PUBLIC_KEYS"]
    for svc in SERVICES:
        key_files = secrets[f"{svc}-service-key"]["stringData"]
        kid, _, path = secrets[f"{svc}-secrets"]["stringData"]["SERVICE_SIGNING_KEYS"].partition("=")
        assert kid.startswith(f"{svc}-")
        for name in (svc, f"{svc}-worker"):
            mounts = _mounts(deployments[name])
            directory, _, filename = path.rpartition("/")
            assert mounts[f"{svc}-service-key"] == directory and filename in key_files, name
            assert keyset_path == mounts["service-public-keys"] + "/service-keys.json", name
        for name, deployment in deployments.items():
            if f"{svc}-service-key" in _mounts(deployment):
                assert name in (svc, f"{svc}-worker"), (name, svc)
    text = "".join(p.read_text() for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    assert "SERVICE_TOKEN_SECRET" not in text
