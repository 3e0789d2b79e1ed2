"""The dashboard's Weights row (issue 24) against a real Prometheus (Debian's, as the cost row's
test uses): the node cache agent's own metrics class on one node holding part of a model's
checkpoint, and stand-ins for the serving app's weight gauges (the same names and labels). Every
query of the row returns data, and the fill is the bytes present over the checkpoint's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from ridgeline_dev.cluster import free_port
from ridgeline_dev.prometheus import Prometheus, static_jobs
from ridgeline_serving.node_cache.decide import ModelRef, Need
from ridgeline_serving.node_cache.metrics import Metrics
from tests.unit.test_chart import DASHBOARDS, dashboard_metrics

NAMESPACE, MODEL, DIRECTORY = "team-w", "weights-model", "models_m-0123456789ab"
PRESENT, TOTAL = 3_000, 12_000
ROW = (
    "Node cache fill per model",
    "Replica weights: read from the node cache vs downloaded",
    "Node cache agents: download rate",
    "Node cache: hits, misses and evictions (last hour)",
    "Cold start by where the weights came from",
)


def _row() -> list[dict[str, Any]]:
    """The panels after the row titled Weights, up to the next row."""
    panels = json.loads(DASHBOARDS[0].read_text())["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Weights")
    out = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        out.append(panel)
    return out


def test_the_dashboard_has_a_weights_row() -> None:
    assert [p["title"] for p in _row()] == list(ROW)


def test_the_rows_agent_metrics_are_the_agents() -> None:
    registry = CollectorRegistry()
    Metrics("n1", registry)
    exported = set()
    for family in registry.collect():
        # a counter is exported as <name>_total (no samples until a label set is used)
        exported.add(f"{family.name}_total" if family.type == "counter" else family.name)
    wanted = {m for m in dashboard_metrics() if m.startswith("ridgeline_node_cache_")}
    assert wanted
    assert wanted <= exported


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    agent = Metrics("node-1")
    need = Need(DIRECTORY, "s3://models/m", TOTAL, (ModelRef(NAMESPACE, MODEL),))
    agent.checkpoints({DIRECTORY: need}, {DIRECTORY: (PRESENT, TOTAL)})
    agent.downloaded(DIRECTORY, PRESENT)
    agent.hit(DIRECTORY)
    agent.miss(DIRECTORY)
    agent.evicted("budget")
    agent.usage(PRESENT, 10 * TOTAL)
    agent_port = free_port()
    start_http_server(agent_port, addr="127.0.0.1", registry=agent.registry)
    serving = CollectorRegistry()
    for name in ("ray_ridgeline_weight_cache_read_bytes", "ray_ridgeline_weight_load_bytes"):
        Gauge(name, "stand-in", ["namespace", "model"], registry=serving).labels(
            NAMESPACE, MODEL
        ).set(TOTAL if "cache" in name else 0)
    startup = Gauge(
        "ray_ridgeline_replica_startup_seconds",
        "stand-in",
        ["namespace", "model", "phase", "source"],
        registry=serving,
    )
    for phase, seconds in (("download", 0.1), ("load", 2.0), ("warmup", 1.0)):
        startup.labels(NAMESPACE, MODEL, phase, "node_cache").set(seconds)
    serving_port = free_port()
    start_http_server(serving_port, addr="127.0.0.1", registry=serving)
    jobs = static_jobs(agent=f"127.0.0.1:{agent_port}", serving=f"127.0.0.1:{serving_port}")
    with Prometheus(tmp_path, jobs) as prometheus:
        prometheus.wait_ready()
        yield prometheus.query


def test_every_weights_query_returns_data(
    prometheus: Callable[[str], list[dict[str, Any]]],
) -> None:
    exprs = {
        (p["title"], t["legendFormat"]): t["expr"]
        .replace("$namespace", NAMESPACE)
        .replace("$model", MODEL)
        for p in _row()
        for t in p["targets"]
    }
    # Waiting for scrapes, not timing anything: until every query has two samples to use.
    deadline = time.monotonic() + 60
    empty: list[tuple[str, str]] = list(exprs)
    while empty and time.monotonic() < deadline:
        empty = [k for k, e in exprs.items() if not prometheus(e)]
        time.sleep(0.5)
    assert empty == []
    fill = exprs[("Node cache fill per model", "{{model}} least-filled node")]
    [series] = prometheus(fill)
    assert series["metric"]["model"] == MODEL
    assert float(series["value"][1]) == pytest.approx(PRESENT / TOTAL)
    # another model's selection sees none of it
    assert prometheus(fill.replace(MODEL, "other-model")) == []
