"""Kubernetes service discovery for Debian's Prometheus, which is built without it
(``kubernetes_sd_configs`` is not a field there): the API's pods and endpoints listed with
kubectl and written as ``file_sd`` target groups carrying the meta labels Prometheus' own
discovery sets (role ``pod`` and ``endpoints``), so the scrape jobs derived from the chart's
monitors keep their relabeling unchanged and Prometheus applies it."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

META = "__meta_kubernetes_"


def _name(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _labels(prefix: str, labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in labels.items():
        out[f"{META}{prefix}_label_{_name(key)}"] = value
        out[f"{META}{prefix}_labelpresent_{_name(key)}"] = "true"
    return out


def _pod_meta(pod: dict[str, Any]) -> dict[str, str]:
    meta = pod["metadata"]
    return {
        f"{META}namespace": meta["namespace"],
        f"{META}pod_name": meta["name"],
        f"{META}pod_ip": pod["status"].get("podIP", ""),
        f"{META}pod_phase": pod["status"].get("phase", ""),
        f"{META}pod_node_name": pod["spec"].get("nodeName", ""),
        **_labels("pod", meta.get("labels") or {}),
    }


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Role ``pod``: one target per declared container port of each pod with an IP."""
    groups = []
    for pod in pods:
        ip = pod["status"].get("podIP")
        if not ip:
            continue
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                labels = {
                    **_pod_meta(pod),
                    f"{META}pod_container_name": container["name"],
                    f"{META}pod_container_port_name": port.get("name", ""),
                    f"{META}pod_container_port_number": str(port["containerPort"]),
                    f"{META}pod_container_port_protocol": port.get("protocol", "TCP"),
                }
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    return groups


def endpoint_targets(
    endpoints: list[dict[str, Any]], services: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Role ``endpoints``: one target per ready address and port of each Endpoints object,
    with its Service's labels and, where the address is a pod's, the pod's."""
    svc = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
    by_pod = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
    groups = []
    for ep in endpoints:
        ns, name = ep["metadata"]["namespace"], ep["metadata"]["name"]
        service = svc.get((ns, name), {"metadata": {}})
        base = {
            f"{META}namespace": ns,
            f"{META}service_name": name,
            f"{META}endpoints_name": name,
            **_labels("service", service["metadata"].get("labels") or {}),
        }
        for subset in ep.get("subsets") or []:
            for address in subset.get("addresses") or []:
                ref = address.get("targetRef") or {}
                pod = by_pod.get((ns, ref.get("name", ""))) if ref.get("kind") == "Pod" else None
                for port in subset.get("ports") or []:
                    labels = {**base, f"{META}endpoint_port_name": port.get("name", ""),
                              f"{META}endpoint_ready": "true"}  # fmt: skip
                    if pod is not None:
                        labels.update(_pod_meta(pod))
                        for c in pod["spec"]["containers"]:
                            if any(
                                p["containerPort"] == port["port"] for p in c.get("ports") or []
                            ):
                                labels[f"{META}pod_container_name"] = c["name"]
                    groups.append({"targets": [f"{address['ip']}:{port['port']}"],
                                   "labels": labels})  # fmt: skip
    return groups


def to_file_sd(jobs: list[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """The jobs with ``kubernetes_sd_configs`` replaced by ``file_sd_configs`` on
    ``<directory>/<role>.json``; a namespace restriction becomes a keep rule first."""
    out = []
    for job in jobs:
        job = copy.deepcopy(job)
        (sd,) = job.pop("kubernetes_sd_configs")
        job["file_sd_configs"] = [
            {"files": [str(directory / f"{sd['role']}.json")], "refresh_interval": "1s"}
        ]
        names = (sd.get("namespaces") or {}).get("names")
        if names:
            keep = {"action": "keep", "source_labels": [f"{META}namespace"],
                    "regex": "|".join(re.escape(n) for n in names)}  # fmt: skip
            job["relabel_configs"] = [keep, *job["relabel_configs"]]
        out.append(job)
    return out


class FileDiscovery:
    """Writes ``pod.json`` and ``endpoints.json`` from ``list_objects(kind)`` (the cluster's
    ``items`` of pods, services, endpoints in every namespace) every period, until closed."""

    def __init__(self, directory: Path, list_objects: Callable[[str], list[dict[str, Any]]],
                 period_s: float = 2.0) -> None:  # fmt: skip
        self.directory = directory
        self.list_objects = list_objects
        directory.mkdir(parents=True, exist_ok=True)
        self.refresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period_s,), daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        pods = self.list_objects("pods")
        groups = {
            "pod": pod_targets(pods),
            "endpoints": endpoint_targets(
                self.list_objects("endpoints"), self.list_objects("services"), pods
            ),
        }
        for role, targets in groups.items():
            # Written aside and renamed: Prometheus must never read half a file.
            tmp = self.directory / f".{role}.json"
            tmp.write_text(json.dumps(targets))
            tmp.replace(self.directory / f"{role}.json")

    def _loop(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            try:
                self.refresh()
            except Exception as exc:  # the API briefly away: keep the last targets
                print(f"[kube_sd] refresh failed: {exc}", flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
