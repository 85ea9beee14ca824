"""The Kubernetes manifest stays consistent with the CLI it runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from asyncmigrate.options import build_parser

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "indexed-job.yaml"


def test_indexed_job_shards_match_completions_and_parse() -> None:
    """An Indexed Job whose SHARDS equals completions and parallelism, running a command the CLI accepts."""
    job = yaml.safe_load(MANIFEST.read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["SHARDS"]) == spec["completions"] == spec["parallelism"]
    script = container["args"][0]
    assert script.startswith("exec asyncmigrate ")
    index = 2
    argv = re.sub(r'"\$\{JOB_COMPLETION_INDEX\}/\$\{SHARDS\}"', f"{index}/{env['SHARDS']}", script)
    argv = argv.replace("${JOB_COMPLETION_INDEX}", str(index)).replace('"', "")
    args = build_parser().parse_args(argv.split()[2:])
    assert args.command == "copy" and args.shard == f"{index}/{env['SHARDS']}"
    assert str(args.journal) == f"/state/journal-{index}.sqlite"


DASHBOARD = MANIFEST.parent / "grafana-dashboard.json"
PODMONITOR = MANIFEST.parent / "podmonitor.yaml"
# PromQL words that are not series: functions, aggregations, keywords.
_PROMQL = {"sum", "count", "rate", "time", "vector", "by", "without", "on", "ignoring", "or", "and", "unless", "bool"}


def _series_in(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label matchers, strings, ranges and by-lists removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return words - _PROMQL


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    # Grafana's label_values(series, label): the series is what it reads.
    templating = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    exprs += [re.sub(r"label_values\(([^,]+),[^)]*\)", r"\1", d) for d in templating]
    return exprs


def test_dashboard_queries_exactly_the_series_the_tool_exports() -> None:
    """Every dashboard query names only series the running code's registry exports (a sharded run's), and
    every exported series is on some panel."""
    from asyncmigrate.metrics import Metrics

    exported = Metrics("copy", shard="0/4").names()
    used: set[str] = set()
    for expr in _queries():
        found = _series_in(expr)
        assert found, expr
        assert found <= exported, (expr, found - exported)
        used |= found
    assert used == exported


def test_pods_serve_metrics_where_the_podmonitor_scrapes() -> None:
    """The Job's pods carry the PodMonitor's selector labels, name the port it scrapes, and run with
    --metrics-addr on that port and a linger longer than the scrape interval."""
    job = yaml.safe_load(MANIFEST.read_text())
    monitor = yaml.safe_load(PODMONITOR.read_text())
    assert monitor["kind"] == "PodMonitor"
    template = job["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    script = container["args"][0].replace("${JOB_COMPLETION_INDEX}", "0").replace("${SHARDS}", "4")
    args = build_parser().parse_args(script.replace('"', "").split()[2:])
    assert endpoint["path"] == "/metrics" and args.metrics_addr == f":{ports[endpoint['port']]}"
    assert args.metrics_linger > float(endpoint["interval"].rstrip("s"))
