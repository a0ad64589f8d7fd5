"""contrib/grafana/pyvs-director.json: valid JSON, a dashboard Grafana imports, and every query names only metrics
and labels that pyvs's /metrics exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pyvs.director.metrics import render
from tests.unit.test_director_metrics import _status

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "pyvs-director.json"
TABLES = {"entries": 900, "size": 1024, "evicted": 12, "half_open": 40, "half_open_size": 256,
          "half_open_evicted": 4, "new_per_second": 35.5, "passes": 9, "nearly_full": 0}
FUNCTIONS = {"sum", "max", "min", "count", "rate", "increase", "changes", "vector", "label_values", "avg", "topk"}
KEYWORDS = {"by", "without", "or", "and", "unless", "on", "ignoring", "bool", "offset"}
PROMETHEUS_LABELS = {"instance", "job"}  # added by the scrape


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, as Prometheus stores a scrape of a daemon with every family present."""
    status = {**_status(), "tables": TABLES}
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(render(status).decode()):  # type: ignore[arg-type]
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and node.get("type") != "datasource":
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_the_dashboard_is_valid_json_with_unique_panels_that_fit_the_grid() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "pyvs director" and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "service"} <= variables


def test_every_expression_names_metrics_and_labels_that_pyvs_exports() -> None:
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    seen: set[str] = set()
    found = list(expressions(dashboard))
    assert len(found) > 20
    for expr in found:
        text = re.sub(r'"[^"]*"', '""', expr)  # label values and regexes
        text = re.sub(r"\[[^\]]*\]", "", text)  # ranges ([$__rate_interval])
        labels = set()
        for group in re.findall(r"\{([^}]*)\}", text):
            labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", group))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text):
            labels.update(w.strip() for w in group.split(",") if w.strip())
        text = re.sub(r"\{[^}]*\}", "", text)
        text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)
        used = [m for m in re.findall(r"[a-zA-Z_:][\w:]*", text) if m not in FUNCTIONS | KEYWORDS]
        metrics = [m for m in used if m not in labels]  # label_values(metric, label): its second argument
        if expr.startswith("label_values("):
            labels.add(metrics.pop())
        assert metrics, f"no metric in {expr!r}"
        for metric in metrics:
            assert metric in names, f"{expr!r}: {metric} is not exported by pyvs"
            seen.add(metric)
        known = set().union(*(names[m] for m in metrics)) | PROMETHEUS_LABELS
        assert labels <= known, f"{expr!r}: labels {labels - known} are not on {metrics}"
    families = {"pyvs_drops_total", "pyvs_conn_table_entries", "pyvs_conn_table_size", "pyvs_conn_table_evicted_total",
                "pyvs_real_up", "pyvs_new_connections_per_second", "pyvs_real_active_connections",
                "pyvs_real_inactive_connections", "pyvs_service_quorum_up", "pyvs_real_health_transitions_total"}
    assert families <= seen, f"not on the dashboard: {families - seen}"
