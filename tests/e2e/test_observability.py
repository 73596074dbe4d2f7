"""What operators point their tools at: the alert rules and dashboard in deploy/, checked
against what a real worker and beat export, and `celery inspect ping` against a real worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import promql_parser
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pixverse_tracker.testing import Processes
from tests.e2e.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pixverse-tracker.json"
CELERY = str(Path(sys.executable).with_name("celery"))
# Labels Prometheus adds to every scraped series: no exporter shows them.
TARGET_LABELS = {"job", "instance"}
# Grafana's variables, replaced by a duration before the expression is parsed.
GRAFANA_RANGES = re.compile(r"\$(__rate_interval|__interval|__range)\b")

Exported = dict[str, list[dict[str, str]]]  # sample name -> the label sets it is exported with


def _scrape(port: str) -> Exported | None:
    try:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    exported: Exported = defaultdict(list)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            exported[sample.name].append(dict(sample.labels))
    return exported


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query."""
    found: list[tuple[str, str]] = []
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule
            assert rule["annotations"]["summary"], rule
            found.append((f"alert {rule['alert']}", rule["expr"]))
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = GRAFANA_RANGES.sub("5m", target["expr"])
            found.append((f"panel {panel['title']!r}", expr))
    return found


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    selectors: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)  # raises ValueError on bad syntax
    return selectors


def _problems(where: str, expr: str, exported: Exported) -> list[str]:
    problems = []
    for selector in _selectors(expr):
        name = selector.name
        if name is None:
            problems.append(f"{where}: a selector without a metric name in {expr!r}")
            continue
        if name not in exported:
            problems.append(f"{where}: {name} is not exported")
            continue
        matchers = [*selector.matchers.matchers, *selector.matchers.or_matchers]
        for matcher in matchers:
            if matcher.name in TARGET_LABELS:
                continue
            values = {labels.get(matcher.name) for labels in exported[name]}
            if values == {None}:
                problems.append(f"{where}: {name} has no label {matcher.name!r}")
            elif matcher.op == promql_parser.MatchOp.Equal and matcher.value not in values:
                problems.append(f"{where}: {name}{{{matcher.name}={matcher.value!r}}} is no series")
    return problems


def test_every_metric_the_alert_rules_and_dashboard_use_is_exported_by_a_worker_or_beat(
    processes: Processes, tracker_env: dict[str, str]
) -> None:
    processes.start("beat")
    processes.start("worker")
    worker_port = tracker_env["TRACKER_METRICS_PORT"]
    beat_port = tracker_env["TRACKER_BEAT_METRICS_PORT"]
    # beat's gauges are complete once a worker has run the first dispatch
    assert wait_until(
        lambda: "tracker_last_dispatch_age_seconds" in (_scrape(beat_port) or {}), 60
    ), processes.logs()
    assert wait_until(lambda: _scrape(worker_port) is not None, 60), processes.logs()
    worker, beat = _scrape(worker_port), _scrape(beat_port)
    assert worker is not None and beat is not None

    # each process serves what it produces, plus the process and platform collectors
    for exported in (worker, beat):
        assert "process_cpu_seconds_total" in exported and "python_info" in exported
    assert "tracker_polls_total" in worker and "tracker_videos" not in worker
    assert "tracker_videos" in beat
    assert not [n for n in beat if n.startswith("tracker_upstream_latency_seconds")]

    exported: Exported = defaultdict(list)
    for source in (worker, beat):
        for name, label_sets in source.items():
            exported[name].extend(label_sets)
    expressions = _expressions()
    assert len(expressions) > 20
    problems = [p for where, expr in expressions for p in _problems(where, expr, exported)]
    assert not problems, "\n".join(problems)

    # the README's metrics table names exactly what the tracker exports
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Metrics") :].split("\n### ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {n for row in rows for n in re.findall(r"`(tracker_[a-z_]+)", row)}
    families = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for name in exported
        if name.startswith("tracker_") and not name.endswith("_created")
    }
    assert documented == families, documented ^ families


def test_celery_inspect_ping_and_flower_see_a_worker_run_with_celery_control_on(
    processes: Processes, tracker_env: dict[str, str]
) -> None:
    # Flower's API answers without a login only when told so (as docker-compose's Flower is
    # behind loopback).
    processes.env = {
        **tracker_env, "TRACKER_CELERY_CONTROL": "true", "FLOWER_UNAUTHENTICATED_API": "true"
    }  # fmt: skip
    processes.start("worker")

    def ping() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CELERY, "-A", "pixverse_tracker.jobs.app", "inspect", "ping", "--timeout", "5"],
            env=processes.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    results: list[subprocess.CompletedProcess[str]] = []
    assert wait_until(lambda: results.append(ping()) or results[-1].returncode == 0, 60), (
        results[-1].stdout + results[-1].stderr + processes.logs()
    )
    assert "pong" in results[-1].stdout
    assert "1 node online" in results[-1].stdout  # this tracker's worker only, on a shared Redis

    # Flower as docker-compose runs it, over the tracker's app and its exchanges
    port = free_port()
    processes.start_raw(
        [
            CELERY,
            "-A",
            "pixverse_tracker.jobs.app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ]
    )

    def workers() -> dict[str, object]:
        url = f"http://127.0.0.1:{port}/api/workers?refresh=1"
        try:
            answer = requests.get(url, timeout=15).json()
        except (requests.RequestException, ValueError):
            return {}
        return answer if isinstance(answer, dict) else {}

    seen: list[dict[str, object]] = []
    assert wait_until(lambda: seen.append(workers()) or bool(seen[-1]), 60), processes.logs()
    (name,) = seen[-1]
    assert name.startswith("celery@")
