"""Alert rules and Alertmanager routing, checked with the real tools: `promtool check config`,
`promtool test rules` (one test file per rule group, every alert seen firing and not firing),
`amtool check-config` and `amtool config routes test`. The tools come from Debian's packages
through dev/prom_tools.py (downloaded on first use); only a machine without apt skips these."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
sys.path.insert(0, str(ROOT / "dev"))
import prom_tools  # noqa: E402


def tool(name: str) -> Path:
    try:
        return prom_tools.ensure(name)
    except prom_tools.Unavailable as exc:
        if exc.apt_missing:
            pytest.skip(str(exc))
        raise


@pytest.fixture(scope="module")
def promtool() -> Path:
    return tool("promtool")


@pytest.fixture(scope="module")
def amtool() -> Path:
    return tool("amtool")


def run(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, cwd=ROOT)


def alerts(path: Path) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_prometheus_config_and_every_rule_file_are_valid(promtool):
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    loaded = {p for pattern in config["rule_files"] for p in PROMETHEUS.glob(pattern)}
    assert loaded == set(RULE_FILES) and len(RULE_FILES) == 4
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.stem)
def test_rule_group_unit_tests_pass_and_see_every_alert_fire_and_not_fire(promtool, rules):
    test_file = PROMETHEUS / "tests" / f"{rules.stem}_test.yml"
    spec = yaml.safe_load(test_file.read_text())
    assert spec["rule_files"] == [f"../rules/{rules.name}"]
    result = run(promtool, "test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    cases = [case for test in spec["tests"] for case in test.get("alert_rule_test", [])]
    for rule in alerts(rules):
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} never seen firing"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']} never seen quiet"


def test_a_broken_rule_fails_its_unit_test(promtool, tmp_path):
    """The unit tests can fail: the outbox threshold raised tenfold makes events_test.yml fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = (PROMETHEUS / "rules" / "events.yml").read_text()
    broken = text.replace("(events_outbox_oldest_unsent_age_seconds) > 60", "(events_outbox_oldest_unsent_age_seconds) > 600")
    assert broken != text
    (tmp_path / "rules" / "events.yml").write_text(broken)
    (tmp_path / "tests" / "events_test.yml").write_text((PROMETHEUS / "tests" / "events_test.yml").read_text())
    result = run(promtool, "test", "rules", tmp_path / "tests" / "events_test.yml")
    assert result.returncode != 0 and "OutboxLagging" in result.stdout + result.stderr


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section():
    known = anchors((ROOT / "docs" / "operations.md").read_text())
    for path in RULE_FILES:
        for rule in alerts(path):
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            doc, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert doc == "docs/operations.md" and anchor in known, (rule["alert"], anchor)


def test_alertmanager_config_is_valid_and_routes_each_severity(amtool):
    config = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    result = run(amtool, "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    for labels, receiver in [
        ("severity=critical", "page"),
        ("severity=warning", "ticket"),
        ("severity=info", "default"),
        ("alertname=OutboxStalled severity=critical producer=users", "page"),
    ]:
        result = run(amtool, "config", "routes", "test", f"--config.file={config}", *labels.split())
        assert result.returncode == 0 and result.stdout.strip() == receiver, (labels, result.stdout, result.stderr)


def test_compose_runs_alertmanager_and_the_exporters_the_rules_read():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    assert services["alertmanager"]["volumes"] == ["./deploy/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"]
    jobs = {job["job_name"]: job for job in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs["postgres"]["static_configs"][0]["targets"] == ["postgres-exporter:9187"] and "postgres-exporter" in services
    assert jobs["redis"]["static_configs"][0]["targets"] == ["redis-exporter:9121"] and "redis-exporter" in services
    assert jobs["events"]["relabel_configs"] == [{"source_labels": ["__meta_dns_name"], "target_label": "process"}]


def test_kubernetes_alerting_manifest_is_generated_from_the_files():
    import k8s_alerting

    assert (ROOT / "deploy" / "k8s" / "alerting.yaml").read_text() == k8s_alerting.render(), (
        "deploy/k8s/alerting.yaml is stale: run python dev/k8s_alerting.py"
    )


def test_dashboard_queries_parse_and_name_metrics_that_exist(promtool, tmp_path):
    """Every query of the events/gateway dashboard is valid PromQL (promtool parses it as a recording
    rule) and every metric it names is exported by this code, recorded by the rules, or one of the
    exporters' (docs/operations.md)."""
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "events-gateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", tmp_path / "dashboard.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    sources = "".join(
        p.read_text()
        for p in [
            *(ROOT / "gateway").glob("*.py"),
            *(ROOT / "shared" / "src").rglob("*.py"),
            *RULE_FILES,
            ROOT / "docs" / "operations.md",
        ]
    )
    keywords = {"sum", "max", "by", "on", "rate", "increase", "histogram_quantile", "le", "up"}
    for expr in exprs:
        for name in re.findall(r"[a-z_:][a-z0-9_:]*(?=\s*[{\[)\s]|$)", re.sub(r'"[^"]*"', "", expr)):
            if name in keywords or name in {
                "type",
                "producer",
                "consumer",
                "service",
                "replica",
                "reason",
                "kind",
                "instance",
                "queue",
                "outcome",
                "process",
                "job",
                "task",
                "route",
            }:
                continue
            base = re.sub(r"_(bucket|total|count|sum)$", "", name)
            assert base in sources or name in sources, (name, expr)
