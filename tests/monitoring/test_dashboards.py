"""The Grafana dashboards kept as JSON in the repository: shape, and PromQL that parses.

Grafana cannot run here; tests/lab/test_lab_monitoring.py runs every panel's query against
the lab's Prometheus and requires series. This test only needs promtool: every expression
is wrapped in a recording rule and checked with `promtool check rules`, which parses PromQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "roles" / "prometheus_stack" / "files" / "dashboards"
sys.path.insert(0, str(REPO))

from lab.labctl.promtools import ensure_promtools  # noqa: E402

EXPECTED = {"edge", "backend", "qdrant", "ollama", "hosts", "backups"}
# Panel plugins Grafana ships (a type it does not know renders "Panel plugin not found").
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "state-timeline", "status-history",
               "heatmap", "histogram", "piechart", "barchart", "logs"}


def load() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def exprs() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every query of every panel."""
    return [(name, p["title"], t["expr"]) for name, board in load().items()
            for p in board["panels"] for t in p["targets"]]


def test_the_dashboards_the_issue_asks_for_exist():
    assert set(load()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_shape(name):
    board = load()[name]
    assert board["uid"] == f"querygpt-{name}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, (panel["title"], panel["type"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        # on Grafana's 24-column grid, and no panel drawn over another
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, (panel["title"], grid)
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_backend_dashboard_breaks_rag_latency_down_by_stage():
    text = json.dumps(load()["backend"])
    assert "querygpt_rag_stage_duration_seconds_bucket" in text
    assert "embed|search|generate" in text


def test_every_panel_query_parses(tmp_path):
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:{name}:{i}", "expr": expr} for i, (name, _, expr) in enumerate(exprs())]}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = ensure_promtools()["promtool"]
    proc = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
