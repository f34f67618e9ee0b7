"""deploy/prometheus and deploy/grafana: they parse, and every metric they use is one the code defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from services.core.config import REPO_ROOT, Settings

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
_DEFINITION = re.compile(r'\b(Counter|Gauge|Histogram)\(\s*"(labflow_[a-z0-9_]+)"')
_USE = re.compile(r"\blabflow_[a-z0-9_]+")


def defined_metrics() -> set[str]:
    """Series names the services expose (histograms with their _bucket/_sum/_count)."""
    names: set[str] = set()
    for path in (REPO_ROOT / "services").rglob("*.py"):
        for kind, name in _DEFINITION.findall(path.read_text(encoding="utf-8")):
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "Counter":
                names |= {name, f"{name.removesuffix('_total')}_total"}
            else:
                names.add(name)
    return names


def used_metrics(expr: str) -> set[str]:
    return set(_USE.findall(expr))


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_rules_and_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus", pytrace=False)
    for args in (["check", "rules", str(PROMETHEUS / "alerts.yml")],
                 ["check", "config", str(PROMETHEUS / "prometheus.yml")]):
        run = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_complete_and_uses_defined_metrics() -> None:
    defined = defined_metrics()
    assert {"labflow_worker_consumer_lag", "labflow_tracing_deliveries_total",
            "labflow_opendata_publication_age_seconds"} <= defined
    found = rules()
    assert len(found) >= 8
    for rule in found:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])
        used = used_metrics(rule["expr"])
        assert used and used <= defined, (rule["alert"], used - defined)


def test_the_alerts_cover_what_operators_need() -> None:
    exprs = " ".join(rule["expr"] for rule in rules())
    for needed in ("labflow_worker_consumer_lag", "labflow_worker_dead_letters_total",
                   'labflow_gateway_messages_total{ack_code=~"AE|AR"}', "sum by (lab)",
                   "labflow_gateway_results_total[24h]", "labflow_dashboard_silent_labs",
                   'labflow_tracing_deliveries_total{outcome="failed"}',
                   "labflow_opendata_publication_age_seconds > 93600"):
        assert needed in exprs, needed


def test_every_service_is_scraped_on_its_configured_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    targets = {target.rsplit(":", 1)[1] for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    fields = Settings.model_fields  # the documented defaults, whatever this shell's environment says
    names = ("gateway_ops_port", "worker_ops_port", "tracing_ops_port", "opendata_port", "dashboard_port")
    assert targets == {str(fields[name].default) for name in names}


def test_grafana_dashboard_and_provisioning() -> None:
    defined = defined_metrics()
    dashboards = list((GRAFANA / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
        for topic in ("per lab", "ack latency", "lag", "batch latency", "handoff delay"):
            assert topic in titles, topic
        for panel in dashboard["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                used = used_metrics(target["expr"])
                assert used and used <= defined, (panel["title"], used - defined)
    for name in ("provisioning-dashboards.yml", "provisioning-datasources.yml"):
        document = yaml.safe_load((GRAFANA / name).read_text())
        assert document["apiVersion"] == 1
    providers = yaml.safe_load((GRAFANA / "provisioning-dashboards.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]


def test_metric_extraction() -> None:
    assert used_metrics('sum by (lab) (rate(labflow_gateway_messages_total{ack_code="AE"}[5m]))') == {
        "labflow_gateway_messages_total"}
