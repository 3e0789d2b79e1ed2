"""What the replica-autoscaling dashboard must answer during a scale-up (issue 25): why it
scaled, how long the new replica took and where, whether the plan held; every panel says what
to read from it, and no two panels overlap on Grafana's grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).parents[2] / "charts/ridgeline/dashboards/replica-autoscaling.json"


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def _panel(title: str) -> dict[str, Any]:
    return next(p for p in _panels() if p["title"] == title)


def test_every_panel_says_what_to_read_from_it() -> None:
    for panel in _panels():
        assert len(panel.get("description", "")) > 40, panel["title"]


def test_the_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels():
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_why_it_scaled_is_shown_per_replica() -> None:
    exprs = [t["expr"] for t in _panel("Ongoing requests per replica vs the target")["targets"]]
    assert any("by (model, pod)" in e and "ray_ridgeline_queue_depth" in e for e in exprs)
    assert any("ray_ridgeline_batch_target" in e for e in exprs)


def test_replicas_are_counted_from_the_pods_as_well_as_the_operator() -> None:
    legends = {t["legendFormat"].split()[0] for t in _panel("Desired vs ready replicas")["targets"]}
    assert legends == {"desired", "ready", "serving"}


def test_where_a_new_replica_spent_its_start() -> None:
    (target,) = _panel("Replica start-up: download, load, warm-up")["targets"]
    assert "ray_ridgeline_replica_startup_seconds" in target["expr"]
    assert "phase" in target["expr"]
    assert "{{phase}}" in target["legendFormat"]


def test_the_plan_is_checked_per_replica() -> None:
    exprs = [t["expr"] for t in _panel("Tokens/s per replica: observed vs the plan's")["targets"]]
    assert any("ray_ridgeline_completion_tokens_total" in e and "pod" in e for e in exprs)
    assert any("ridgeline_operator_predicted_tokens_per_second" in e for e in exprs)
