"""docs/grafana-dashboard.json asks only for metrics a real `meshlog up` exposes (and the
README lists), on the datasource Grafana is provisioned with; compose.yaml's Prometheus
scrapes every meshlog process where it serves `/metrics`. (No container engine here: the
files are checked, not run.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import meshlog_up

ROOT = Path(__file__).parents[2]
DASHBOARD = json.loads((ROOT / "docs/grafana-dashboard.json").read_text())
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
_METRIC = re.compile(r"\b(?:meshlog|process|python)_[a-z0-9_]+\b")
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
             "histogram": ("_bucket", "_count", "_sum", "_created")}


def _exprs() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"]
            for target in panel.get("targets", [])]


def _used() -> set[str]:
    return {name for expr in _exprs() for name in _METRIC.findall(expr)}


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every sample name `meshlog up` can expose, from the families its /metrics declares
    (a labelled metric nobody has touched yet still has its TYPE line)."""
    with meshlog_up(tmp_path_factory.mktemp("dashboard")) as cp:
        text = httpx.get(cp.where["api"] + "/metrics", timeout=10).text
    yield {family.name + suffix for family in text_string_to_metric_families(text)
           for suffix in _SUFFIXES.get(family.type, ("",))}


@pytest.mark.integration
def test_every_metric_of_the_dashboard_is_exposed_by_meshlog_up(exposed: set[str]) -> None:
    assert _used() - exposed == set()


def test_every_meshlog_metric_of_the_dashboard_and_the_alerts_is_in_the_readme() -> None:
    section = (ROOT / "README.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(meshlog_[a-z0-9_]+)` \| (\w+) \|", section, re.MULTILINE)
    # the README names counters with their `_total`
    listed = {name + suffix for name, kind in rows
              for suffix in (("",) if kind == "counter" else _SUFFIXES[kind])}
    assert {n for n in _used() | _alert_metrics() if n.startswith("meshlog_")} - listed == set()


def test_the_dashboard_covers_proxies_pushes_nacks_lag_leader_api_and_nats() -> None:
    used = _used()
    for name in ("meshlog_xds_streams", "meshlog_xds_nacks_total",
                 "meshlog_xds_push_latency_seconds_bucket", "meshlog_projector_lag_events",
                 "meshlog_projector_lag_seconds", "meshlog_projector_leader",
                 "meshlog_api_requests_total", "meshlog_api_request_duration_seconds_bucket",
                 "meshlog_nats_connected"):
        assert name in used, name


def test_every_panel_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load((ROOT / "docs/grafana/datasource.yaml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    panels = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    # balanced parentheses and brackets: a typo's commonest shape
    for expr in _exprs():
        for open_, close in ("()", "[]", "{}"):
            assert expr.count(open_) == expr.count(close), expr


def _flag(command: list[str], flag: str, default: str | None = None) -> str | None:
    return command[command.index(flag) + 1] if flag in command else default


def _metrics_at(service: dict[str, Any]) -> tuple[str | None, str | None]:
    """(host it binds, port) where a meshlog service's command serves /metrics (README,
    Metrics; the defaults of services/cli/main.py)."""
    command = service["command"]
    match command[1]:
        case "api":
            return _flag(command, "--api-host", "127.0.0.1"), _flag(command, "--api-port", "5681")
        case "gateway":
            return (_flag(command, "--xds-host", "127.0.0.1"),
                    _flag(command, "--health-port", "5680"))
        case "projector":
            return (_flag(command, "--metrics-host", "127.0.0.1"),
                    _flag(command, "--metrics-port"))
    raise AssertionError(f"not a meshlog process: {command}")


def test_prometheus_scrapes_every_meshlog_service_of_compose_where_it_serves() -> None:
    services = COMPOSE["services"]
    meshlog = {name for name, s in services.items() if s.get("command", [""])[0] == "meshlog"}
    config = yaml.safe_load((ROOT / "docs/prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    scraped = set()
    for target in targets:
        host, _, port = target.partition(":")
        assert host in meshlog, target
        assert _metrics_at(services[host]) == ("0.0.0.0", port), target
        scraped.add(host)
    assert scraped == meshlog


def test_compose_mounts_files_that_exist_and_grafana_reaches_prometheus() -> None:
    services = COMPOSE["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), volume
            else:
                assert source in COMPOSE["volumes"], volume
    provisioned = yaml.safe_load((ROOT / "docs/grafana/datasource.yaml").read_text())
    assert provisioned["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((ROOT / "docs/grafana/dashboards.yaml").read_text())
    path = dashboards["providers"][0]["options"]["path"]
    assert any(v.split(":")[1].startswith(path + "/") for v in services["grafana"]["volumes"])


ALERTS = yaml.safe_load((ROOT / "docs/alerts.yml").read_text())
_RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]


def _alert_metrics() -> set[str]:
    return {name for rule in _RULES for name in _METRIC.findall(rule["expr"])}


def test_every_alert_expression_parses_as_promql() -> None:
    assert len(_RULES) >= 10
    for rule in _RULES:
        try:
            promql_parser.parse(rule["expr"])
        except ValueError as exc:
            raise AssertionError(f"{rule['alert']}: {exc}") from exc


@pytest.mark.integration
def test_every_metric_an_alert_reads_is_exposed_by_meshlog_up(exposed: set[str]) -> None:
    assert _alert_metrics() - exposed == set()


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() -> None:
    operations = (ROOT / "docs/operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in operations.splitlines() if line.startswith("#")}
    names = [rule["alert"] for rule in _RULES]
    assert len(names) == len(set(names))
    for rule in _RULES:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section {anchor!r} in {page}"


def test_prometheus_loads_the_alerts_where_compose_mounts_them() -> None:
    config = yaml.safe_load((ROOT / "docs/prometheus.yml").read_text())
    mounted = {v.split(":")[1]: v.split(":")[0]
               for v in COMPOSE["services"]["prometheus"]["volumes"]}
    assert [mounted[path] for path in config["rule_files"]] == ["./docs/alerts.yml"]
