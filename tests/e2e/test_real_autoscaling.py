"""Replica autoscaling under load on the real node, watched as an SRE's Prometheus would
(issue 25): ``helm install``, an InferenceModel with ``replicas: {min: 1, max: 2}`` on CPU
pods small enough that the head and two workers fit this 2-core node, Debian's Prometheus
scraping the pods and the operator's Service found by discovery (the jobs derived from the
chart's PodMonitor/ServiceMonitor) with the chart's alert rules loaded. A bounded closed-loop
load at twice the planned batch drives Serve's autoscaler to a second replica; KubeRay adds a
worker pod; both replicas serve; the load stops and the model goes back to one replica and one
worker pod. Every dashboard query returns data during and after, the replicas panel reads
1 -> 2 -> 1, and the scale-up's parts and the scale-down are printed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ridgeline_dev.closed_loop import ClosedLoop, first_at_least, series, steps
from ridgeline_dev.cluster import ClusterState, kubectl
from ridgeline_dev.kube_sd import FileDiscovery, to_file_sd
from ridgeline_dev.prometheus import Prometheus, render_chart, rule_groups, scrape_configs
from ridgeline_dev.real_chain import (
    SYSTEM,
    apply,
    apply_credentials,
    chart_values,
    inference_model,
    install_chart,
    namespace,
    real_node_cluster,
    upload_private_model,
)
from ridgeline_dev.real_chain import seconds as _seconds
from tests.e2e.conftest import get_json, wait_for
from tests.unit.test_chart import dashboard_exprs

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NS, MODEL = "scaling", "tiny-scale"
SCALE_DOWN_DELAY_S = 10
LOAD_MAX_S = 900  # the load's own bound: it stops by itself even if no scale-up comes
BOTH_SERVING_S = 30  # load kept on after the second replica's first request
MONITORING = ("--set", "metrics.podMonitor.enabled=true", "--set",
              "metrics.serviceMonitor.enabled=true", "--set",
              "metrics.prometheusRule.enabled=true")  # fmt: skip


def say(line: str) -> None:
    print(f"[autoscaling] {line}", flush=True)


@pytest.fixture(scope="module")
def state() -> Iterator[ClusterState]:
    with real_node_cluster("autoscaling") as cluster:
        yield cluster


def small_pods(cluster: ClusterState) -> dict[str, Any]:
    """The chain's values with workers of 500m: the operator (100m), the head (250m, and 500m
    for its autoscaler sidecar) and two workers fit the node's 2 allocatable cores."""
    out = chart_values(cluster)
    out["serving"]["cpuWorkerResources"] = {"cpu": "500m", "memory": "3Gi"}
    # Priced, so the dashboard's cost row has the operator's price to query.
    out["nodePools"] = [
        {"name": "cpu", "gpuProduct": "cpu", "gpusPerNode": 0, "memoryGiB": 4,
         "pricePerNodeHour": 0.36}
    ]  # fmt: skip
    return out


@pytest.fixture
def prometheus(state: ClusterState, tmp_path: Path) -> Iterator[Prometheus]:
    """Debian's Prometheus with the jobs derived from the chart's monitors (Kubernetes
    discovery done by kube_sd: Debian builds Prometheus without it) and the chart's rules."""
    manifests = render_chart(*MONITORING, namespace=SYSTEM)
    discovery = FileDiscovery(
        tmp_path / "sd", lambda kind: list(get_json(state, kind, "-A")["items"])
    )
    jobs = to_file_sd(scrape_configs(manifests), tmp_path / "sd")
    for job in jobs:
        job["scrape_interval"] = "2s"
    prom = Prometheus(tmp_path / "prom", jobs, rule_groups(manifests), interval="2s")
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.close()
        discovery.close()


def workers(cluster: ClusterState) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        cluster, "-n", NS, "pods", "-l", "ray.io/node-type=worker"
    )["items"]
    return items


def empty_panels(prom: Prometheus) -> list[str]:
    """Every dashboard query without data, but the node cache agents': the node cache is off
    in this install (tests/unit/test_weights_dashboard.py queries them against an agent)."""
    empty = []
    for title, expr in dashboard_exprs():
        if "ridgeline_node_cache_" in expr:
            continue
        query = expr.replace("$namespace", NS).replace("$model", ".*")
        if not prom.query(query):
            empty.append(f"{title}: {query}")
    return empty


def install_and_apply(cluster: ClusterState, tmp_path: Path) -> None:
    namespace(cluster, SYSTEM)
    namespace(cluster, NS)
    install_chart(cluster, small_pods(cluster), tmp_path)
    upload_private_model(cluster, tmp_path, MODEL)
    apply_credentials(cluster, NS)
    apply(cluster, inference_model(MODEL, NS, {
        # The SLO holds the planned batch (the autoscaling target) at 4: twice it is a load
        # of 8 clients, which this machine drives beside the pods (without it, 361).
        "workload": {"maxContextTokens": 512, "slo": {"timePerOutputTokenMs": 3.1}},
        "replicas": {"min": 1, "max": 2, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S},
    }))  # fmt: skip


def replicas_now(prom: Prometheus) -> dict[str, float]:
    """The replicas panel's lines now (desired, ready, serving) for this namespace."""
    out = {}
    for legend, expr in replicas_panel().items():
        result = prom.query(expr.replace("$namespace", NS).replace("$model", ".*"))
        out[legend] = float(result[0]["value"][1]) if result else 0.0
    return out


def replicas_panel() -> dict[str, str]:
    panel = json.loads((REPO / "charts/ridgeline/dashboards/replica-autoscaling.json").read_text())[
        "panels"
    ][0]
    assert panel["title"] == "Desired vs ready replicas"
    return {t["legendFormat"].split()[0]: t["expr"] for t in panel["targets"]}


def served_by_pod(prom: Prometheus) -> dict[str, float]:
    result = prom.query(f'sum by (pod) (ray_ridgeline_requests_total{{namespace="{NS}"}})')
    return {r["metric"].get("pod", ""): float(r["value"][1]) for r in result}


def test_one_to_two_replicas_under_load_and_back(
    state: ClusterState, prometheus: Prometheus, tmp_path: Path
) -> None:
    from openai import OpenAI

    install_and_apply(state, tmp_path)
    model = wait_for("READY 1", lambda: _ready_model(state), 900)
    batch = int(model["status"]["plan"]["batchTarget"])
    assert batch <= 8, f"planned batch {batch}: {2 * batch} clients would swamp two cores"
    (first_worker,) = [p["metadata"]["name"] for p in workers(state)]
    ip = get_json(state, "-n", NS, "service", f"{MODEL}-serve-svc")["spec"]["clusterIP"]
    client = OpenAI(base_url=f"http://{ip}:8000/v1", api_key="unused", timeout=600)
    one = {"desired": 1.0, "ready": 1.0, "serving": 1.0}
    # Ray's agent exports every 10 s: the panel's lines read 1 before the load starts.
    wait_for("the replicas panel at 1", lambda: replicas_now(prometheus) == one, 120)

    def send() -> None:
        answer = client.completions.create(model=MODEL, prompt="load", max_tokens=32)
        assert answer.choices[0].text is not None

    load = ClosedLoop(send, clients=2 * batch, max_s=LOAD_MAX_S)
    say(f"READY 1 on {first_worker}; planned batch {batch}, {2 * batch} clients")
    load.start()
    new_pod: dict[str, Any] = {}
    first_served = 0.0
    during: list[str] = []
    each: dict[str, float] = {}
    try:
        while time.time() - load.started < LOAD_MAX_S:
            time.sleep(2)
            pods = [p for p in workers(state) if p["metadata"]["name"] != first_worker]
            if pods:
                new_pod = pods[0]
            name = new_pod.get("metadata", {}).get("name")
            if name and not first_served and served_by_pod(prometheus).get(name):
                first_served = time.time()
                say(f"second replica ({name}) served its first request")
            if first_served and time.time() - first_served > BOTH_SERVING_S:
                during = empty_panels(prometheus)
                by_pod = prometheus.query(
                    f'sum by (pod) (increase(ray_ridgeline_requests_total{{namespace="{NS}"}}'
                    f"[{BOTH_SERVING_S}s]))"
                )
                each = {r["metric"].get("pod"): float(r["value"][1]) for r in by_pod}
                new_pod = get_json(state, "-n", NS, "pod", name)
                break
    finally:
        load.stop()
    say(f"load: {load.ok} answers, {len(load.errors)} errors, {load.stopped - load.started:.0f}s")
    assert first_served, "no second replica served within the load's bound"
    assert load.errors == []
    assert each.get(first_worker, 0) > 0
    assert each.get(new_pod["metadata"]["name"], 0) > 0, each
    assert during == []

    wait_for("one worker pod again", lambda: len(workers(state)) == 1, 600)
    pod_gone = time.time()
    wait_for("the replicas panel back at 1", lambda: replicas_now(prometheus) == one, 120)
    # Idle now: the observed cost has no line while no tokens are generated (its description).
    after = [e for e in empty_panels(prometheus) if not e.startswith("Cost per million tokens")]

    def ranges_back_at_one() -> dict[str, list[tuple[float, float]]] | None:
        """The replicas panel's lines over the run, once their last points read 1 (a range's
        points fall on its steps, which can end before the instant that read 1)."""
        ranges = {
            k: series(
                prometheus.query_range(
                    e.replace("$namespace", NS).replace("$model", ".*"),
                    load.started,
                    time.time(),
                    2,
                )
            )
            for k, e in replicas_panel().items()
        }
        return ranges if all(r and r[-1][1] == 1 for r in ranges.values()) else None

    ranges = wait_for("the replicas panel's range back at 1", ranges_back_at_one, 60)
    report(load, new_pod, prometheus, ranges, pod_gone)
    assert after == []
    for kind in ("desired", "ready", "serving"):
        assert [v for _, v in steps(ranges[kind])] == [1, 2, 1], (kind, steps(ranges[kind]))
    rules = prometheus.api("rules")["groups"][0]["rules"]
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}
    kubectl(state, "delete", "-n", NS, "inferencemodel", MODEL, "--wait=true", "--timeout=180s")


def _ready_model(cluster: ClusterState) -> dict[str, Any] | None:
    obj: dict[str, Any] = get_json(cluster, "-n", NS, "inferencemodel", MODEL)
    ready = int((obj.get("status") or {}).get("replicas", {}).get("ready") or 0)
    return obj if ready >= 1 else None


def report(
    load: ClosedLoop,
    pod: dict[str, Any],
    prom: Prometheus,
    ranges: dict[str, list[tuple[float, float]]],
    pod_gone: float,
) -> None:
    """Load start to the second replica's first request and its parts; load stop to
    scale-down."""
    t0 = load.started
    name = pod["metadata"]["name"]
    decided = first_at_least(ranges["desired"], 2, t0)
    created = _seconds(pod["metadata"]["creationTimestamp"])
    scheduled = next(
        _seconds(c["lastTransitionTime"])
        for c in pod["status"]["conditions"]
        if c["type"] == "PodScheduled"
    )
    container = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "ray-worker")
    started = _seconds(container["state"]["running"]["startedAt"])
    phases = {
        r["metric"]["phase"]: float(r["value"][1])
        for r in prom.query(
            f'max by (phase) (ray_ridgeline_replica_startup_seconds{{pod="{name}"}})'
        )
    }
    served = series(
        prom.query_range(
            f'sum(ray_ridgeline_requests_total{{namespace="{NS}", pod="{name}"}})',
            t0,
            load.stopped,
            2,
        )
    )
    first = served[0][0] if served else float("nan")
    serving_back = next((t for t, v in ranges["serving"] if t > load.stopped and v <= 1), None)

    def rel(t: float | None) -> str:
        return f"{t - t0:.0f}s" if t is not None else "n/a"

    say(f"load start -> second replica's first request: {rel(first)}")
    say(f"  Serve's decision (KubeRay's desired workers 2): {rel(decided)}; pod created {rel(created)}, "
        f"scheduled {rel(scheduled)}, ray-worker started {rel(started)}")  # fmt: skip
    say(
        "  replica start-up: "
        + ", ".join(
            f"{k} {phases.get(k, float('nan')):.1f}s"
            for k in ("ray_start", "download", "load", "warmup")
        )
    )
    down = f"{serving_back - load.stopped:.0f}s" if serving_back else "n/a"
    say(f"load stop -> one replica serving: {down}; worker pod gone: "
        f"{pod_gone - load.stopped:.0f}s")  # fmt: skip
