"""The dashboard's cost row against a real Prometheus (Debian's, as tests/serving/test_api.py
uses): the operator's price gauge for a priced plan, and a stand-in for the serving app's token
counter (the same metric name and labels) that runs, then stops, so both the busy and the idle
case are queried. The serving test checks the same panels against the real app."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from ridgeline.api import InferenceModelSpec
from ridgeline.api.inference_model import InferenceModelStatus, ReplicaStatus
from ridgeline.planner import NodePool, plan_model
from ridgeline.shape.config_estimate import estimate_model_shape
from ridgeline_dev.checkpoints import TINY_LLAMA_CONFIG
from ridgeline_dev.cluster import free_port
from ridgeline_dev.prometheus import Prometheus, static_jobs
from ridgeline_operator import metrics as operator_metrics
from tests.unit.test_chart import dashboard_exprs

NAMESPACE, BUSY, IDLE = "cost-dash", "busy-model", "idle-model"
PRICE = 0.36  # a CPU node-hour: one replica holds the whole node
REPLICAS = 2


def cost_exprs() -> dict[str, str]:
    """The cost row's queries by legend, for this test's namespace."""
    dash = json.loads(
        (
            Path(__file__).parents[2] / "charts/ridgeline/dashboards/replica-autoscaling.json"
        ).read_text()
    )
    out = {}
    for panel in dash["panels"]:
        if panel["title"].startswith(("Cost per million tokens", "Cost per hour")):
            for t in panel["targets"]:
                key = t["legendFormat"].split()[0]
                out[key] = t["expr"].replace("$namespace", NAMESPACE).replace("$model", ".*")
    return out


def test_the_dashboard_has_a_cost_row() -> None:
    titles = [t for t, _ in dashboard_exprs()]
    assert "Cost per million tokens: observed vs the plan's" in titles
    assert "Cost per hour: replicas running vs idle" in titles
    assert set(cost_exprs()) == {"observed", "planned", "running", "idle"}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """Prometheus scraping the operator's metrics and a stand-in token counter every second;
    yields a function that runs an instant query."""
    for name in (BUSY, IDLE):
        pool = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, price_per_node_hour=PRICE)
        spec = InferenceModelSpec.model_validate(
            {
                "model": {"uri": "file:///x"},
                "accelerators": ["cpu"],
                "workload": {"maxContextTokens": 1024},
            }
        )
        plan = plan_model(estimate_model_shape(TINY_LLAMA_CONFIG), spec, [pool])
        status = InferenceModelStatus(
            plan=plan, replicas=ReplicaStatus(desired=REPLICAS, ready=REPLICAS)
        )
        operator_metrics.observe(NAMESPACE, name, status)
    operator_port = free_port()
    start_http_server(operator_port, addr="127.0.0.1")
    serving = CollectorRegistry()
    tokens = Counter(
        "ray_ridgeline_completion_tokens",
        "Stand-in for the serving app's counter.",
        ["namespace", "model"],
        registry=serving,
    )
    tokens.labels(NAMESPACE, IDLE)  # exported at 0: the idle model never generates one
    serving_port = free_port()
    start_http_server(serving_port, addr="127.0.0.1", registry=serving)
    stop = threading.Event()

    def generate() -> None:
        while not stop.wait(0.05):
            tokens.labels(NAMESPACE, BUSY).inc(50)

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    jobs = static_jobs(serving=f"127.0.0.1:{serving_port}", operator=f"127.0.0.1:{operator_port}")
    try:
        with Prometheus(tmp_path, jobs) as prometheus:
            prometheus.wait_ready()
            yield prometheus.query
    finally:
        stop.set()
        worker.join(timeout=10)
        for name in (BUSY, IDLE):
            operator_metrics.forget(NAMESPACE, name)


def _by_model(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["model"]: float(r["value"][1]) for r in result}


def test_the_cost_panels_return_the_cost_observed_planned_and_idle(
    prometheus: Callable[[str], list[dict[str, Any]]],
) -> None:
    exprs = cost_exprs()
    rate = f'sum by (model) (rate(ray_ridgeline_completion_tokens_total{{namespace="{NAMESPACE}"}}[5m]))'
    # Waiting for scrapes, not timing anything: until Prometheus has two samples of each.
    deadline = time.monotonic() + 60
    got: dict[str, dict[str, float]] = {}
    while time.monotonic() < deadline:
        got = {k: _by_model(prometheus(e)) for k, e in exprs.items()}
        if all(got[k] for k in exprs) and BUSY in got["observed"]:
            break
        time.sleep(0.5)
    assert all(got[k] for k in exprs), got
    running = got["running"]
    assert running == {BUSY: REPLICAS * PRICE, IDLE: REPLICAS * PRICE}
    # idle: the model that generated nothing costs its running price; the busy one nothing
    assert got["idle"] == {BUSY: 0.0, IDLE: REPLICAS * PRICE}
    # planned: status.plan.predicted.costPerMillionTokens, as the plan computed it
    plan_cost = plan_model(
        estimate_model_shape(TINY_LLAMA_CONFIG),
        InferenceModelSpec.model_validate(
            {
                "model": {"uri": "file:///x"},
                "accelerators": ["cpu"],
                "workload": {"maxContextTokens": 1024},
            }
        ),
        [NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, price_per_node_hour=PRICE)],
    ).predicted.cost_per_million_tokens
    assert plan_cost is not None
    assert got["planned"][BUSY] == pytest.approx(plan_cost, rel=0.005)
    # observed: the running price over the tokens generated, per million; none while idle
    assert set(got["observed"]) == {BUSY}
    tokens_per_s = _by_model(prometheus(rate))[BUSY]
    observed = _by_model(prometheus(exprs["observed"]))[BUSY]
    assert observed == pytest.approx(REPLICAS * PRICE / (tokens_per_s * 3600) * 1e6, rel=0.05)
