"""The chart's monitoring objects, rendered by the toolchain's helm (no cluster): the
PrometheusRule passes ``promtool check rules`` and every alert evaluates in Debian's Prometheus
(and goes pending on stand-in series shaped like the real ones); the discovery scrape config
derived from the PodMonitor/ServiceMonitor selects what the operator's pods and the chart's
Service carry, and follows the templates when they change."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ridgeline.api.inference_model import InferenceModel
from ridgeline.render.meta import labels as model_labels
from ridgeline_dev.cluster import free_port
from ridgeline_dev.kube_sd import FileDiscovery, to_file_sd
from ridgeline_dev.prometheus import (
    CHART,
    Prometheus,
    check_rules,
    render_chart,
    rule_groups,
    scrape_configs,
)

MONITORS = ("--set", "metrics.podMonitor.enabled=true", "--set",
            "metrics.serviceMonitor.enabled=true")  # fmt: skip
NS, MODEL = "alerting", "tiny-chat"


def _alerts() -> list[dict[str, Any]]:
    groups = rule_groups(render_chart("--set", "metrics.prometheusRule.enabled=true"))
    return [rule for group in groups for rule in group["rules"]]


def test_the_rule_is_opt_in() -> None:
    assert rule_groups(render_chart()) == []


def test_every_alert_has_a_summary_and_description_and_promtool_passes(tmp_path: Path) -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} == {
        "RidgelineQueuedAtMaxReplicas",
        "RidgelineTokensPerSecondBelowPlan",
        "RidgelineReplicaNotStarting",
        "RidgelineServerErrors",
        "RidgelineRequestsRejected",
    }
    for alert in alerts:
        assert alert["annotations"]["summary"], alert
        assert alert["annotations"]["description"], alert
        assert "{{ $labels.model }}" in alert["annotations"]["summary"], alert
    assert "SUCCESS: 5 rules found" in check_rules([{"name": "r", "rules": alerts}], tmp_path)


@pytest.fixture
def stand_in() -> Iterator[dict[str, Any]]:
    """Series named and labelled as the scraped ones (the serving pods' carry their namespace
    from the PodMonitor, the operator's theirs through honorLabels): a model whose second
    replica never becomes ready and whose requests all fail with 500."""
    registry = CollectorRegistry()
    keys = ["namespace", "model"]
    requests = Counter("ray_ridgeline_requests", "", [*keys, "code"], registry=registry)
    replicas = Gauge("ridgeline_operator_replicas", "", [*keys, "kind"], registry=registry)
    replicas.labels(NS, MODEL, "desired").set(2)
    replicas.labels(NS, MODEL, "ready").set(1)
    for name, value in (("ridgeline_operator_predicted_tokens_per_second", 100.0),
                        ("ray_ridgeline_batch_target", 8.0), ("ray_ridgeline_queue_depth", 1.0),
                        ("ray_ridgeline_waiting_sequences", 0.0)):  # fmt: skip
        Gauge(name, "", keys, registry=registry).labels(NS, MODEL).set(value)
    tokens = Counter("ray_ridgeline_completion_tokens", "", keys, registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()

    def serve_errors() -> None:
        while not stop.wait(0.05):
            requests.labels(NS, MODEL, "500").inc()
            tokens.labels(NS, MODEL).inc(5)

    worker = threading.Thread(target=serve_errors, daemon=True)
    worker.start()
    yield {"job_name": "stand-in", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    stop.set()
    worker.join(timeout=10)
    server.shutdown()
    thread.join(timeout=10)


def test_every_alert_evaluates_against_prometheus(stand_in: dict[str, Any], tmp_path: Path) -> None:
    alerts = _alerts()
    prom = Prometheus(tmp_path / "prom", [stand_in], [{"name": "ridgeline", "rules": alerts}])
    try:
        prom.wait_ready()
        for alert in alerts:  # a query Prometheus refuses fails in api()
            prom.query(alert["expr"])
        # Waiting for two scrapes and an evaluation, not timing anything.
        deadline = time.monotonic() + 60
        states: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            rules = prom.api("rules")["groups"][0]["rules"]
            states = {r["name"]: (r["health"], r["state"]) for r in rules}
            if (
                states.get("RidgelineServerErrors", ("", ""))[1] == "pending"
                and states.get("RidgelineReplicaNotStarting", ("", ""))[1] == "pending"
            ):
                break
            time.sleep(0.5)
    finally:
        prom.close()
    assert {name: health for name, (health, _) in states.items()} == {
        a["alert"]: "ok" for a in alerts
    }
    assert {name: state for name, (_, state) in states.items()} == {
        "RidgelineQueuedAtMaxReplicas": "inactive",
        "RidgelineTokensPerSecondBelowPlan": "inactive",  # busy at 100 tokens/s, but not loaded
        "RidgelineReplicaNotStarting": "pending",
        "RidgelineServerErrors": "pending",
        "RidgelineRequestsRejected": "inactive",
    }


def _keeps(job: dict[str, Any]) -> dict[str, str]:
    return {
        r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r["action"] == "keep"
    }


def test_discovery_selects_the_model_pods_and_the_operator_service(tmp_path: Path) -> None:
    manifests = render_chart(*MONITORS)
    pods, service = scrape_configs(manifests)
    # The pods the operator renders for any model, on the container port it names `metrics`.
    model = InferenceModel.model_validate(
        {"metadata": {"name": "m", "namespace": "n"},
         "spec": {"model": {"uri": "file:///x"}, "accelerators": ["cpu"]}}
    )  # fmt: skip
    selected = {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "ridgeline\\-model"}
    assert model_labels(model)["app.kubernetes.io/name"] == "ridgeline-model"
    assert _keeps(pods) == {**selected, "__meta_kubernetes_pod_container_port_name": "metrics"}
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]  # namespaceSelector any
    # The chart's own Service carries what the ServiceMonitor selects, on the port it names.
    svc = next(o for o in manifests if o["kind"] == "Service")
    assert svc["spec"]["ports"][0]["name"] == "metrics"
    meta = "__meta_kubernetes_service_label_"
    assert _keeps(service) == {
        f"{meta}app_kubernetes_io_instance": "ridgeline",
        f"{meta}app_kubernetes_io_name": "ridgeline",
        "__meta_kubernetes_endpoint_port_name": "metrics",
    }
    assert svc["metadata"]["labels"]["app.kubernetes.io/name"] == "ridgeline"
    assert service["kubernetes_sd_configs"] == [
        {"role": "endpoints", "namespaces": {"names": ["ridgeline-system"]}}
    ]
    # The operator's series name the model's namespace; Prometheus must not rename it.
    assert service["honor_labels"] is True
    assert pods["honor_labels"] is False
    # Debian's promtool has no Kubernetes discovery: the file form it runs here is checked.
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": to_file_sd([pods, service], tmp_path)}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with prometheus (tests/e2e/ensure-prometheus.sh)"
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_discovery_config_follows_the_template(tmp_path: Path) -> None:
    chart = tmp_path / "ridgeline"
    shutil.copytree(CHART, chart)
    template = chart / "templates" / "monitoring.yaml"
    text = template.read_text()
    assert text.count("{app.kubernetes.io/name: ridgeline-model}") == 1
    template.write_text(
        text.replace("{app.kubernetes.io/name: ridgeline-model}", "{team: inference}")
        .replace("- {port: metrics, interval: {{ .Values.metrics.podMonitor.interval }}",
                 "- {port: ray-metrics, interval: {{ .Values.metrics.podMonitor.interval }}")
    )  # fmt: skip
    pods, _ = scrape_configs(render_chart(*MONITORS, chart=chart))
    assert _keeps(pods) == {
        "__meta_kubernetes_pod_label_team": "inference",
        "__meta_kubernetes_pod_container_port_name": "ray\\-metrics",
    }


def test_a_selector_it_cannot_translate_is_refused() -> None:
    monitor = {
        "kind": "PodMonitor",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                 "podMetricsEndpoints": [{"port": "metrics"}]},
    }  # fmt: skip
    with pytest.raises(ValueError, match="not supported"):
        scrape_configs([monitor])


def _pod(name: str, labels: dict[str, str], port_name: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "models", "labels": labels},
        "spec": {"containers": [{"name": "ray-worker",
                                 "ports": [{"name": port_name, "containerPort": port}]}]},
        "status": {"podIP": "127.0.0.1", "phase": "Running"},
    }  # fmt: skip


def test_prometheus_scrapes_what_the_monitors_select(tmp_path: Path) -> None:
    """The derived jobs in Debian's Prometheus, on discovered objects: a model's pod on its
    `metrics` port is scraped, a pod of something else and a model's other port are not; the
    operator's Service is, and its series keep the model's namespace."""
    registry = CollectorRegistry()
    Gauge("ridgeline_operator_replicas", "", ["namespace", "model", "kind"],
          registry=registry).labels("models", MODEL, "ready").set(1)  # fmt: skip
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    manifests = render_chart(*MONITORS)
    model = InferenceModel.model_validate(
        {"metadata": {"name": MODEL, "namespace": "models"},
         "spec": {"model": {"uri": "file:///x"}, "accelerators": ["cpu"]}}
    )  # fmt: skip
    svc = next(o for o in manifests if o["kind"] == "Service")
    operator = {**_pod("ridgeline-operator-0", {}, "metrics", port), "metadata": {
        "name": "ridgeline-operator-0", "namespace": "ridgeline-system", "labels": {}}}  # fmt: skip
    objects: dict[str, list[dict[str, Any]]] = {
        "pods": [
            _pod("model-worker", model_labels(model), "metrics", port),
            _pod("model-dash", model_labels(model), "dashboard", free_port()),
            _pod("other", {"app.kubernetes.io/name": "other"}, "metrics", free_port()),
            operator,
        ],
        "services": [svc],
        "endpoints": [{
            "metadata": {"name": svc["metadata"]["name"], "namespace": "ridgeline-system"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1", "targetRef": {
                "kind": "Pod", "name": "ridgeline-operator-0"}}],
                "ports": [{"name": "metrics", "port": port}]}],
        }],
    }  # fmt: skip
    svc["metadata"]["namespace"] = "ridgeline-system"
    discovery = FileDiscovery(tmp_path / "sd", lambda kind: objects[kind])
    jobs = to_file_sd(scrape_configs(manifests), tmp_path / "sd")
    for job in jobs:
        job["scrape_interval"] = "1s"
    prom = Prometheus(tmp_path / "prom", jobs)
    try:
        prom.wait_ready()
        deadline = time.monotonic() + 60
        up: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(up) < 2:
            up = prom.query("up == 1")
            time.sleep(0.5)
        replicas = prom.query('ridgeline_operator_replicas{kind="ready"}')
    finally:
        prom.close()
        discovery.close()
        server.shutdown()
        thread.join(timeout=10)
    scraped = sorted((u["metric"]["job"], u["metric"].get("pod", "")) for u in up)
    assert scraped == [
        ("PodMonitor/ridgeline-system/ridgeline-serving", "model-worker"),
        ("ServiceMonitor/ridgeline-system/ridgeline-operator", "ridgeline-operator-0"),
    ]
    # Both jobs scrape the one stand-in exporter: the ServiceMonitor's keeps `models`.
    namespaces = {(r["metric"]["job"], r["metric"]["namespace"]) for r in replicas}
    assert ("ServiceMonitor/ridgeline-system/ridgeline-operator", "models") in namespaces
