"""The container and Kubernetes descriptions are kept truthful. No cluster runs here, so these
tests check what a cluster and a reader would: kubernetes-validate --strict for the current and two
previous Kubernetes minor versions, checkov over the manifests and Dockerfiles, hardening, network
policies, grace periods, probes, replicas, autoscaling, disruption budgets, PgBouncer in front of
Postgres, a connection budget that fits, locked and hashed image requirements, and multi-stage
images. The images and compose file also run for real in `make containers-test`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["users", "feed", "notifications"]
K8S_DIR = ROOT / "deploy" / "k8s"
UID = 10001


def k8s_versions() -> list[str]:
    """The newest Kubernetes minor version kubernetes-validate knows, and the two before it."""
    major, minor, _ = kubernetes_validate.utils.latest_version().split(".")
    return [f"{major}.{int(minor) - back}" for back in range(3)]


K8S_VERSIONS = k8s_versions()
DOCKERFILES = [f"services/{svc}/Dockerfile" for svc in SERVICES] + ["gateway/Dockerfile"]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict]:
    """Every Kubernetes object under deploy/k8s (the app and deploy/k8s/migrations), not the
    kustomization files."""
    docs = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
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
        assert services[f"{svc}-migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input", "--wait", "60"]
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
    ini = dict(
        line.split(" = ", 1)
        for line in (ROOT / "deploy/pgbouncer/pgbouncer.ini").read_text().splitlines()
        if " = " in line and not line.startswith(";")
    )
    pooled = len(SERVICES) * (int(ini["default_pool_size"]) + int(ini["reserve_pool_size"]))
    direct = len(SERVICES) * 2  # a relay and a migration per service at most
    reserved = 3 + 10  # superuser_reserved_connections + admin
    assert pooled + direct + reserved <= max_connections
    # and PgBouncer accepts every gunicorn thread of every replica
    env = compose()["x-service-env"]
    threads = sum(
        services[s]["deploy"]["replicas"] * int(env["GUNICORN_WORKERS"]) * int(env["GUNICORN_THREADS"]) for s in SERVICES
    )
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


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", k8s_docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_kubernetes_schema(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


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
    for name, job in by_kind("Job").items():  # an unreachable database is tried again for a minute
        assert job["spec"]["template"]["spec"]["containers"][0]["command"][2:] == ["migrate", "--no-input", "--wait", "60"], name


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
    targets = {
        (name, sd["port"]) for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", []) for name in sd["names"]
    }
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
    sources = {
        v["name"]: (v.get("secret", {}).get("secretName") or v.get("configMap", {}).get("name")) for v in pod.get("volumes", [])
    }
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


def pod_specs() -> dict[str, dict]:
    """Every pod template (Deployments and Jobs) by workload name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in k8s_docs() if d["kind"] in {"Deployment", "Job"}}


def container_env(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_every_pod_is_hardened():
    """Numeric non-root UID/GID (runAsNonRoot can verify it), seccomp RuntimeDefault, no capabilities,
    no privilege escalation, read-only root filesystem with an emptyDir where the process writes
    (/tmp: beat schedule, gateway metrics; /tmp/metrics: the replicas' Prometheus multiprocess dir)."""
    for name, spec in pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID and pod["runAsGroup"] == UID, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsUser"] == UID and sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            if container.get("command") is None and name != "gateway":  # an API replica (gunicorn)
                assert "emptyDir" in volumes[mounts["/tmp/metrics"]], name


def test_dockerfiles_run_as_the_numeric_user_the_manifests_name():
    for dockerfile in DOCKERFILES:
        users = re.findall(r"^USER (.+)$", (ROOT / dockerfile).read_text(), re.M)
        assert users == [f"{UID}:{UID}"], dockerfile


def test_users_processes_get_signing_keys_from_a_mounted_secret():
    config = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Secret"}
    keys = config["users-secrets"]["stringData"]["JWT_SIGNING_KEYS"]
    paths = [item.split("=", 1)[1] for item in keys.split(",")]
    for name, spec in pod_specs().items():
        if not name.startswith("users"):
            continue
        volumes = {v["name"]: v for v in spec["volumes"]}
        container = spec["containers"][0]
        assert {"secretRef": {"name": "users-secrets"}} in container["envFrom"], name
        mounts = [
            m for m in container["volumeMounts"] if volumes[m["name"]].get("secret", {}).get("secretName") == "users-jwt-keys"
        ]
        assert len(mounts) == 1 and mounts[0]["readOnly"] is True, name
        secret = volumes[mounts[0]["name"]]["secret"]["secretName"]
        for path in paths:  # each key file is a key of the mounted Secret
            directory, filename = path.rsplit("/", 1)
            assert directory == mounts[0]["mountPath"] and filename in config[secret]["stringData"], (name, path)


def test_every_process_has_probes():
    """Workers and relays answer on their metrics port, a beat checks its broker, replicas and the
    gateway on /health/*: the kubelet restarts a wedged process of any kind."""
    for deployment in by_kind("Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "livenessProbe" in container and "readinessProbe" in container, deployment["metadata"]["name"]


def _prestop_seconds(container: dict) -> int:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0


def test_grace_periods_cover_prestop_and_drain():
    """SIGTERM arrives after preStop; the process then needs its own drain: the gateway's drain delay
    + drain timeout, gunicorn's graceful_timeout. The kubelet kills at terminationGracePeriodSeconds."""
    import gateway.config
    from shared import gunicorn_conf

    deployments = by_kind("Deployment")
    gw = deployments["gateway"]["spec"]["template"]["spec"]
    settings = gateway.config.load({k: v for k, v in container_env(gw["containers"][0]).items() if v is not None})
    needed = _prestop_seconds(gw["containers"][0]) + settings.drain_delay + settings.drain_timeout
    assert gw["terminationGracePeriodSeconds"] >= needed
    for svc in SERVICES:
        spec = deployments[svc]["spec"]["template"]["spec"]
        needed = _prestop_seconds(spec["containers"][0]) + gunicorn_conf.graceful_timeout
        assert spec["terminationGracePeriodSeconds"] >= needed, svc
    services = compose()["services"]
    assert int(services["gateway"]["stop_grace_period"].rstrip("s")) >= settings.drain_delay + settings.drain_timeout
    for svc in SERVICES:
        assert int(services[svc]["stop_grace_period"].rstrip("s")) >= gunicorn_conf.graceful_timeout


def test_network_policies_deny_by_default_and_allow_only_what_the_system_needs():
    policies = by_kind("NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny

    def ingress_to(name: str) -> list[dict]:
        rules = []
        for policy in policies.values():
            labels = policy["spec"]["podSelector"].get("matchLabels", {})
            if "Ingress" in policy["spec"]["policyTypes"] and labels.get("app.kubernetes.io/name") == name:
                rules += policy["spec"].get("ingress", [])
        return rules

    # only the gateway accepts traffic from anywhere, and only on its public port
    open_rules = [
        (p["metadata"]["name"], rule) for p in policies.values() for rule in p["spec"].get("ingress", []) if "from" not in rule
    ]
    assert [name for name, _ in open_rules] == ["gateway-ingress"]
    assert open_rules[0][1]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    # feed and notifications: the gateway only (nobody calls their /internal/); users: the gateway and
    # the services that call its /internal/ and JWKS
    for svc in ("feed", "notifications"):
        assert [peer for rule in ingress_to(svc) for peer in rule["from"]] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
        ]
    users_peers = [peer for rule in ingress_to("users") for peer in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}} in users_peers
    callers = next(
        peer["podSelector"]["matchExpressions"][0]["values"]
        for peer in users_peers
        if "matchExpressions" in peer.get("podSelector", {})
    )
    assert set(callers) == {"users", "feed", "notifications"}
    # metrics: only Prometheus, on the metrics ports
    scrape = policies["prometheus-scrape"]["spec"]["ingress"]
    assert [peer["podSelector"]["matchLabels"] for rule in scrape for peer in rule["from"]] == [
        {"app.kubernetes.io/name": "prometheus"}
    ]
    # every pod of the app carries the labels the policies select on (the tracing stack runs in
    # namespace monitoring: test_tracing_stack_receives_from_every_process)
    for name, deployment in {**by_kind("Deployment"), **by_kind("Job")}.items():
        if deployment["metadata"]["namespace"] != "social":
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "social", name
        assert name == "gateway" or labels["social/service"] in SERVICES, name


def test_tracing_stack_receives_from_every_process():
    """docs/operations.md#tracing: every process of compose and Kubernetes exports OTLP to a
    collector, which forwards to Jaeger; the collector's configuration is one file in both."""
    collector = (ROOT / "deploy" / "otel" / "collector.yaml").read_text()
    config = yaml.safe_load(collector)
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert "0.0.0.0:4318" in config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    # compose: the collector mounts that file; every process of the table exports to it
    services = compose()["services"]
    assert "./deploy/otel/collector.yaml:/etc/otelcol/config.yaml:ro" in services["otel-collector"]["volumes"]
    assert "jaeger" in services
    processes = yaml.safe_load((ROOT / "deploy" / "processes.yaml").read_text())["processes"]
    for name in processes:
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318", name
        assert env["OTEL_TRACES_EXPORTER"].startswith("${OTEL_TRACES_EXPORTER:-otlp}"), name
    # Kubernetes: the same configuration as a ConfigMap; the app's processes get the endpoint
    # (envFrom social-config, the gateway by reference) and may reach the collector's port
    assert by_kind("ConfigMap")["otel-collector-config"]["data"]["config.yaml"] == collector
    assert by_kind("ConfigMap")["social-config"]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    for name, deployment in by_kind("Deployment").items():
        if deployment["metadata"]["namespace"] != "social":
            continue
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        sources = {s.get("configMapRef", {}).get("name") for s in container.get("envFrom", [])}
        refs = {e["name"] for e in container.get("env", []) if "valueFrom" in e}
        assert "social-config" in sources or {"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= refs, name
    egress = by_kind("NetworkPolicy")["tracing-egress"]["spec"]
    assert egress["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "social"}}
    assert egress["egress"][0]["ports"] == [{"port": 4318, "protocol": "TCP"}]
    deployments = by_kind("Deployment")
    assert (
        deployments["otel-collector"]["metadata"]["namespace"] == deployments["jaeger"]["metadata"]["namespace"] == "monitoring"
    )


def test_client_addresses_reach_the_gateway():
    """externalTrafficPolicy: Local keeps the client's source address (no SNAT to a node IP), so the
    per-IP limits see clients; GATEWAY_TRUSTED_PROXIES is declared for an L7 proxy in front."""
    service = by_kind("Service")["gateway"]["spec"]
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    container = by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert "GATEWAY_TRUSTED_PROXIES" in container_env(container)


def test_migrations_are_jobs_applied_before_the_rollout_with_plain_kubectl():
    """No Argo CD hook: the Jobs live in their own kustomization (deploy/k8s/migrations) that the
    runbook applies first; finished Jobs expire, so a new tag never meets an immutable old Job."""
    app = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    migrations = yaml.safe_load((K8S_DIR / "migrations" / "kustomization.yaml").read_text())
    assert all(not resource.startswith("migrations") for resource in app["resources"])
    for job in by_kind("Job").values():
        assert not job["metadata"].get("annotations"), job["metadata"]["name"]
        assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 86400
    job_files = {p.name for p in (K8S_DIR / "migrations").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(migrations["resources"]) == job_files
    # every resource file is in the app kustomization; each service's image tag is set there, and
    # the migrations use the same tags
    app_files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(app["resources"]) == app_files
    tags = {image["name"]: image["newTag"] for image in app["images"]}
    used = {
        c["image"].rsplit(":", 1)[0]
        for d in k8s_docs()
        if d["kind"] in {"Deployment", "Job"} and d["metadata"]["namespace"] == "social"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert set(tags) == used == {f"ghcr.io/social/{name}" for name in [*SERVICES, "gateway"]}
    assert all(tags[image["name"]] == image["newTag"] for image in migrations["images"])


def _kustomization_docs(directory: Path) -> list[dict]:
    """The objects `kubectl apply -k directory` applies."""
    resources = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    return [d for name in resources for d in yaml.safe_load_all((directory / name).read_text()) if d]


def _read_by_pods(docs: list[dict]) -> tuple[dict[str, set[str]], set[str]]:
    """Secrets the pod templates read (name → the keys they name) and the ConfigMaps they read."""
    secrets: dict[str, set[str]] = {}
    configmaps: set[str] = set()
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        spec = doc["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                secrets.setdefault(volume["secret"]["secretName"], set())
            if "configMap" in volume:
                configmaps.add(volume["configMap"]["name"])
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    secrets.setdefault(source["secretRef"]["name"], set())
                if "configMapRef" in source:
                    configmaps.add(source["configMapRef"]["name"])
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                if "secretKeyRef" in value_from:
                    secrets.setdefault(value_from["secretKeyRef"]["name"], set()).add(value_from["secretKeyRef"]["key"])
                if "configMapKeyRef" in value_from:
                    configmaps.add(value_from["configMapKeyRef"]["name"])
    return secrets, configmaps


def test_a_release_never_overwrites_the_secrets_or_the_key_set():
    """The runbook applies deploy/k8s/migrations and deploy/k8s at every release: a Secret or the
    services' public key set among them would replace the real one, created from the secret store,
    with its placeholder. They are in deploy/k8s/environment, created once per environment, which
    declares every Secret the pods read, with the keys they name."""
    applied = _kustomization_docs(K8S_DIR) + _kustomization_docs(K8S_DIR / "migrations")
    assert [d["metadata"]["name"] for d in applied if d["kind"] == "Secret"] == []
    environment = [d for p in sorted((K8S_DIR / "environment").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert {d["kind"] for d in environment} == {"Secret", "ConfigMap"}
    declared = {
        d["metadata"]["name"]: {*d.get("stringData", {}), *d.get("data", {})} for d in environment if d["kind"] == "Secret"
    }
    per_environment = {d["metadata"]["name"] for d in environment if d["kind"] == "ConfigMap"}
    applied_configmaps = {d["metadata"]["name"] for d in applied if d["kind"] == "ConfigMap"}
    assert "service-public-keys" in per_environment and not per_environment & applied_configmaps
    secrets, configmaps = _read_by_pods(applied)
    assert set(secrets) == set(declared)
    for name, keys in secrets.items():
        assert keys <= declared[name], (name, keys - declared[name])
    assert per_environment <= configmaps <= per_environment | applied_configmaps


def _checkov(*args: str) -> subprocess.CompletedProcess:
    checkov = ROOT / ".venv" / "checkov" / "bin" / "checkov"
    assert checkov.exists(), "checkov is installed by `make venv` (requirements/checkov.txt)"
    return subprocess.run(
        [str(checkov), "--config-file", str(ROOT / ".checkov.yaml"), "--compact", "--quiet", "--skip-download", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_checkov_passes_on_manifests_and_dockerfiles():
    result = _checkov(
        "-d",
        "deploy/k8s",
        "--framework",
        "kubernetes",
        "dockerfile",
        *[arg for dockerfile in DOCKERFILES for arg in ("-f", dockerfile)],
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    counts = re.findall(r"Passed checks: (\d+), Failed checks: (\d+)", result.stdout)
    assert counts and all(int(failed) == 0 for _, failed in counts) and all(int(passed) > 0 for passed, _ in counts)


def test_every_skipped_check_is_justified_next_to_it():
    for line in (ROOT / ".checkov.yaml").read_text().splitlines():
        if line.strip().startswith("- CKV"):
            assert re.match(r"\s*- CKV\w+\s+# \S.{20,}", line), line
    for dockerfile in DOCKERFILES:
        for line in (ROOT / dockerfile).read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.match(r"# checkov:skip=CKV\w+: \S.{20,}", line), (dockerfile, line)


# --- images ---------------------------------------------------------------------------------


def stages(dockerfile: str) -> list[str]:
    """The Dockerfile's stages, each from its FROM line to the next."""
    text = (ROOT / dockerfile).read_text()
    return ["FROM" + part for part in re.split(r"^FROM", text, flags=re.M)[1:]]


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) of a `make lock` output."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            current = match.group(1).lower().replace("_", "-")
            entries[current] = (match.group(2), [])
        elif (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)) and current:
            entries[current][1].append(match.group(1))
    return entries


def pins(path: Path) -> dict[str, str]:
    """name → version of a hand-written requirements file, following -r includes."""
    result: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            result.update(pins((path.parent / line[3:].strip()).resolve()))
        elif "==" in line:
            name, version = line.split("==")
            result[name.strip().lower().replace("_", "-")] = version.strip()
    return result


@pytest.mark.parametrize(
    ("lock", "source"),
    [
        *[(f"services/{svc}/requirements.lock", f"services/{svc}/requirements.txt") for svc in SERVICES],
        ("gateway/requirements.lock", "requirements/gateway.txt"),
        ("requirements/build.lock", "requirements/image-build.txt"),
        ("requirements/build.lock", "requirements/gateway-build.txt"),
    ],
)
def test_lock_files_pin_every_package_with_hashes(lock, source):
    """Every package (transitive ones included) has a version and hashes; every hand-pinned version
    is the locked one (a changed requirements file without `make lock` fails here)."""
    entries = locked(ROOT / lock)
    assert entries and all(hashes for _, hashes in entries.values()), lock
    for name, version in pins(ROOT / source).items():
        assert entries[name][0] == version, (lock, name)
    lines = [line for line in (ROOT / lock).read_text().splitlines() if line and not line.startswith((" ", "#"))]
    assert all(re.match(r"^[A-Za-z0-9_.\-]+==\S+ \\$", line) for line in lines), lock


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_install_only_locked_hashed_wheels(dockerfile):
    text = (ROOT / dockerfile).read_text()
    installs = re.findall(r"pip install ([^\n\\&]+)", text)
    assert installs
    for args in installs:
        if "--no-deps" in args:  # the project's own ./shared, built offline with the locked setuptools
            assert "--no-build-isolation" in args and args.split()[-1] == "./shared"
            continue
        assert "--require-hashes" in args and "--only-binary=:all:" in args, args
        lock = args.split("-r ", 1)[1].split()[0]
        assert lock.endswith(".lock") and (ROOT / lock).is_file(), args


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_are_multi_stage_with_a_bare_runtime_stage(dockerfile):
    """The runtime stage copies the built venv; it installs nothing, compiles nothing, has no pip,
    and ends as the numeric user with a HEALTHCHECK."""
    build, runtime = stages(dockerfile)
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    assert runtime.startswith("FROM ${PYTHON_IMAGE}\n")
    for forbidden in ("apt-get", "gcc", "pip ", "Cython", "build_ext", "tests"):
        assert forbidden not in runtime, (dockerfile, forbidden)
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "pip uninstall -y pip setuptools" in build  # the copied venv carries no installer
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[", runtime, re.M), dockerfile


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_image_is_a_build_argument_pinned_by_digest(dockerfile):
    text = (ROOT / dockerfile).read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert match and re.fullmatch(r"python:3\.11[\w.\-]*@sha256:[0-9a-f]{64}", match.group(1)), dockerfile
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_dockerignore_keeps_local_state_secrets_and_tests_out_of_the_context():
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".run", "deploy/secrets", "**/tests", "**/__pycache__", "gateway/*.so"} <= ignored


def test_dockerignore_covers_everything_git_ignores():
    """What git keeps out of the repository is local state (virtualenvs, caches, dev data and keys,
    benchmark worktrees): a build from a working checkout must not send it either. A .gitignore
    pattern without a slash matches at any depth, so .dockerignore has it as `**/name` or, for
    what only ever exists at the root, as `name`."""
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    for line in (ROOT / ".gitignore").read_text().splitlines():
        pattern = line.strip().rstrip("/")
        if not pattern or pattern.startswith("#"):
            continue
        accepted = {pattern} if "/" in pattern else {pattern, f"**/{pattern}"}
        assert accepted & ignored, f".gitignore's {line.strip()!r} is missing from .dockerignore"


# --- compose: secrets, keys, health -----------------------------------------------------------


def test_compose_has_no_public_default_secrets():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text.lower()
    for name in ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), name  # required: compose refuses to start without it
        assert not re.search(r"\$\{" + name + r":-", text), name


def test_compose_gives_every_users_process_the_signing_keys():
    services = compose()["services"]
    for name, spec in services.items():
        if name == "users" or name.startswith("users-"):
            keys = spec["environment"]["JWT_SIGNING_KEYS"]
            for item in keys.split(","):
                _kid, path = item.split("=", 1)
                assert path == f"/run/secrets/{path.rsplit('/', 1)[1]}" and path.rsplit("/", 1)[1] in spec["secrets"], name


def test_compose_checks_the_health_of_every_long_running_container():
    services = compose()["services"]
    for name, spec in services.items():
        one_shot = spec.get("restart") == "no"
        if one_shot:
            assert spec["healthcheck"] == {"disable": True}, name
        else:
            assert spec["healthcheck"]["test"][0] == "CMD", name
        assert one_shot or "stop_grace_period" in spec or "build" not in spec, name
    for name, spec in services.items():
        for dependency, condition in (spec.get("depends_on") or {}).items() if isinstance(spec.get("depends_on"), dict) else []:
            if condition["condition"] == "service_started":
                pytest.fail(f"{name} waits only for {dependency} to start, not to be healthy")


def test_compose_images_are_variables_defaulting_to_public_images():
    services = compose()["services"]
    for name in (
        "postgres",
        "redis",
        "pgbouncer",
        "prometheus",
        "grafana",
        "alertmanager",
        "postgres-exporter",
        "redis-exporter",
    ):
        assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE:-[\w./-]+:[\w.\-]+\}", services[name]["image"]), name
    for name, spec in services.items():
        if "build" in spec:
            assert spec["build"]["args"] == ["PYTHON_IMAGE", "COMMIT"], name  # COMMIT: what /version reports


def test_images_are_tagged_with_each_components_release():
    """k8s (kustomizations and manifests) and compose's defaults name each image with the version in
    its component's VERSION file: `make release` writes both (docs/releasing.md)."""
    versions = {name: (ROOT / "services" / name / "VERSION").read_text().strip() for name in SERVICES}
    versions["gateway"] = (ROOT / "gateway" / "VERSION").read_text().strip()
    for kustomization in (K8S_DIR / "kustomization.yaml", K8S_DIR / "migrations" / "kustomization.yaml"):
        for image in yaml.safe_load(kustomization.read_text())["images"]:
            assert image["newTag"] == versions[image["name"].rsplit("/", 1)[1]], (kustomization.name, image)
    project = [
        container["image"]
        for spec in pod_specs().values()
        for container in spec["containers"]
        if container["image"].startswith("ghcr.io/social/")  # not the monitoring stack's (deploy/k8s/tracing)
    ]
    assert {image.split("/")[2].split(":")[0] for image in project} == set(versions)
    for full in project:
        image, tag = full.rsplit(":", 1)
        assert tag == versions[image.rsplit("/", 1)[1]], full
    services = compose()["services"]
    for name, version in versions.items():
        images = {spec["image"] for spec in services.values() if f"/{name}:" in spec.get("image", "")}
        assert images == {f"${{IMAGE_PREFIX:-social}}/{name}:${{{name.upper()}_TAG:-{version}}}"}, name


# --- make containers-test: podman's configuration on a machine that lacks it -----------------------


def _containers_test_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("containers_test", ROOT / "dev" / "containers_test.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_containers_test_configures_podman_once_and_keeps_what_is_set(tmp_path):
    configure = _containers_test_module().configure_podman
    settings = {"containers": ("default_ulimits", "[]"), "engine": ("runtime", '"runc"')}
    conf = tmp_path / "containers" / "containers.conf"
    configure(settings, conf)  # no file yet: both sections written
    first = conf.read_text()
    assert "[containers]\ndefault_ulimits = []" in first and '[engine]\nruntime = "runc"' in first
    configure(settings, conf)
    assert conf.read_text() == first  # idempotent
    conf.write_text('[containers]\nlog_driver = "k8s-file"\n[engine]\nruntime = "crun"\n')
    configure(settings, conf)  # an existing section gains the key; a key already set is left alone
    assert conf.read_text() == '[containers]\ndefault_ulimits = []\nlog_driver = "k8s-file"\n[engine]\nruntime = "crun"\n'


def test_compose_image_variables_have_a_stand_in_each():
    """Every infrastructure image compose pulls is replaced in make containers-test, except those it does not start."""
    module = _containers_test_module()
    variables = set(re.findall(r"\$\{([A-Z_]+_IMAGE):-", (ROOT / "docker-compose.yml").read_text()))
    not_started = {re.match(r"\$\{([A-Z_]+_IMAGE)", compose()["services"][name]["image"]).group(1) for name in module.NOT_STARTED}
    replaced = set(module.STAND_INS.values()) | not_started
    assert variables == replaced, variables ^ replaced
    assert {"grafana", "otel-collector", "jaeger"} == module.NOT_STARTED
    targets = re.findall(r"^FROM packages AS (\S+)$", (ROOT / "dev/containers/infra.Containerfile").read_text(), re.M)
    assert sorted(targets) == sorted(module.STAND_INS)
