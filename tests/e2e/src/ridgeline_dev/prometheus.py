"""Debian's Prometheus as an SRE's would watch Ridgeline, without the Prometheus Operator: the
chart's PodMonitor/ServiceMonitor turned into the ``kubernetes_sd_configs`` scrape configs the
operator would generate from them (same selector, same port name, the same target labels), the
chart's PrometheusRule as a rule file, and a server on loopback to query; or static targets,
for the tests that scrape exporters they start themselves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ridgeline_dev.cluster import free_port
from ridgeline_dev.toolchain import MODULES, build

CHART = Path(__file__).resolve().parents[4] / "charts" / "ridgeline"
KUBE_VERSION = "1.36.3"


def helm_binary() -> Path:
    """The toolchain's helm (built once, cached)."""
    return build(next(m for m in MODULES if m.name == "helm")) / "helm"


def render_chart(
    *args: str, chart: Path = CHART, namespace: str = "ridgeline-system", release: str = "ridgeline"
) -> list[dict[str, Any]]:
    """``helm template`` of the chart (``args``: helm's, e.g. ``--set``): its objects."""
    out = subprocess.run(
        [str(helm_binary()), "template", release, str(chart), "-n", namespace,
         "--kube-version", KUBE_VERSION, *args],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _label(name: str) -> str:
    """A Kubernetes label as Prometheus' discovery meta label names it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _namespaces(monitor: dict[str, Any]) -> list[str] | None:
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return None
    return list(selector.get("matchNames") or [monitor["metadata"]["namespace"]])


def _keep_selected(monitor: dict[str, Any], meta: str) -> list[dict[str, Any]]:
    selector = monitor["spec"]["selector"]
    # Only matchLabels is translated: a selector this cannot express must fail, not widen.
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"{monitor['metadata']['name']}: selector {selector} not supported")
    return [
        {"action": "keep", "source_labels": [f"{meta}_{_label(k)}"], "regex": re.escape(str(v))}
        for k, v in sorted(selector["matchLabels"].items())
    ]


def _job(role: str, monitor: dict[str, Any], endpoint: dict[str, Any], kubeconfig: str | None,
         keep: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    sd: dict[str, Any] = {"role": role}
    namespaces = _namespaces(monitor)
    if namespaces is not None:
        sd["namespaces"] = {"names": namespaces}
    if kubeconfig:
        sd["kubeconfig_file"] = kubeconfig
    meta = monitor["metadata"]
    job: dict[str, Any] = {
        "job_name": f"{monitor['kind']}/{meta['namespace']}/{meta['name']}",
        "kubernetes_sd_configs": [sd],
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "relabel_configs": keep + targets,
    }
    if "interval" in endpoint:
        job["scrape_interval"] = endpoint["interval"]
    if "path" in endpoint:
        job["metrics_path"] = endpoint["path"]
    return job


def _target(source: str, target: str) -> dict[str, Any]:
    return {"action": "replace", "source_labels": [source], "target_label": target}


def scrape_configs(
    manifests: list[dict[str, Any]], kubeconfig: str | None = None
) -> list[dict[str, Any]]:
    """One scrape job per endpoint of each PodMonitor (role ``pod``) and ServiceMonitor (role
    ``endpoints``) among the rendered manifests, keeping what the monitor selects and labelling
    targets as the Prometheus Operator does (namespace, pod, container, service)."""
    jobs = []
    for obj in manifests:
        if obj.get("kind") == "PodMonitor":
            keep = _keep_selected(obj, "__meta_kubernetes_pod_label")
            keep.append({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
                         "regex": "(Failed|Succeeded)"})  # fmt: skip
            targets = [
                _target("__meta_kubernetes_namespace", "namespace"),
                _target("__meta_kubernetes_pod_name", "pod"),
                _target("__meta_kubernetes_pod_container_name", "container"),
            ]
            for endpoint in obj["spec"]["podMetricsEndpoints"]:
                port = _keep_port("__meta_kubernetes_pod_container_port_name", endpoint)
                jobs.append(_job("pod", obj, endpoint, kubeconfig, keep + port, targets))
        elif obj.get("kind") == "ServiceMonitor":
            keep = _keep_selected(obj, "__meta_kubernetes_service_label")
            targets = [
                _target("__meta_kubernetes_namespace", "namespace"),
                _target("__meta_kubernetes_service_name", "service"),
                _target("__meta_kubernetes_pod_name", "pod"),
                _target("__meta_kubernetes_pod_container_name", "container"),
            ]
            for endpoint in obj["spec"]["endpoints"]:
                port = _keep_port("__meta_kubernetes_endpoint_port_name", endpoint)
                jobs.append(_job("endpoints", obj, endpoint, kubeconfig, keep + port, targets))
    return jobs


def _keep_port(label: str, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The relabeling that keeps only the endpoint's named port (``label`` holds the name)."""
    return [{"action": "keep", "source_labels": [label], "regex": re.escape(endpoint["port"])}]


def static_jobs(**targets: str) -> list[dict[str, Any]]:
    """One scrape job a ``host:port`` target, named by its keyword (processes outside a
    cluster: a test's own exporters, a local serving app)."""
    return [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()]


def rule_groups(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rule groups of every rendered PrometheusRule (a Prometheus rule file's ``groups``)."""
    return [g for o in manifests if o.get("kind") == "PrometheusRule" for g in o["spec"]["groups"]]


def check_rules(groups: list[dict[str, Any]], workdir: Path) -> str:
    """``promtool check rules`` on the groups; its output, or AssertionError with it."""
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with prometheus (tests/e2e/ensure-prometheus.sh)"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Prometheus:
    """Debian's prometheus on a loopback port with the given scrape jobs and rule groups."""

    def __init__(
        self,
        workdir: Path,
        jobs: list[dict[str, Any]],
        groups: list[dict[str, Any]] | None = None,
        interval: str = "1s",
    ) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is installed by tests/e2e/ensure-prometheus.sh (make test)"
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": jobs,
        }
        if groups:
            (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
            config["rule_files"] = [str(workdir / "rules.yaml")]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
        )  # fmt: skip

    def api(self, path: str, **params: str) -> Any:
        """A GET on the HTTP API: its ``data``; AssertionError with the body unless success."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the error
            body = json.loads(exc.read())
        assert body["status"] == "success", (params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def query_range(
        self, expr: str, start: float, end: float, step_s: float = 1
    ) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=str(start), end=str(end),
                        step=str(step_s))  # fmt: skip
        return list(data["result"])

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Until the server answers (it opens its port after loading the TSDB and rules)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.api("status/buildinfo")
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
