"""Operator scale: N InferenceModels across N/2 fake GPU nodes in 4 pools on the loopback
control plane (KubeRay's CRDs, no KubeRay controller: the operator alone is measured). Time
until every model is Planned, reconciles per second, operator peak memory; then the same at 2x,
as ratios. Writes docs/benchmarks.md (section "Operator")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_report import write_section

from ridgeline.planner import NodePool
from ridgeline_dev import fleet
from ridgeline_dev.checkpoints import write_skeleton
from ridgeline_dev.cluster import ClusterState, down, free_port, kubectl, up

REPO = Path(__file__).resolve().parents[2]
POOLS = [
    ("h100", "NVIDIA-H100-80GB-HBM3", 8, "550.54.15"),
    ("a100", "NVIDIA-A100-SXM4-80GB", 8, "535.104.05"),
    ("l40s", "NVIDIA-L40S", 4, "570.124.06"),
    ("l4", "NVIDIA-L4", 1, "570.124.06"),
]
MODELS = ["tiny-llama", "llama-3.1-8b", "qwen2-7b", "mistral-7b-v0.3"]


def _config(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((REPO / "examples" / "models" / name / "config.json").read_text())


def _scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(n_models: int, work: Path) -> dict[str, float]:
    state: ClusterState = up(work / f"cluster-{n_models}", with_kuberay=False, with_s3=False)
    try:
        nodes_per_pool = n_models // 2 // len(POOLS)
        pools = [
            NodePool(name=n, gpu_product=p, gpus_per_node=g, driver_version=d, nodes=nodes_per_pool)
            for n, p, g, d in POOLS
        ]
        kube = [
            str(Path(state.commands["kube-apiserver"]).with_name("kubectl")),
            "--kubeconfig",
            state.kubeconfig,
        ]
        fleet.apply(pools, kube)
        uris = {m: write_skeleton(_config(m), work / "models" / m).as_uri() for m in MODELS}
        kubectl(state, "create", "namespace", "bench")
        metrics_port = free_port()
        log = (work / f"operator-{n_models}.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ridgeline.cli",
                "operator",
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                str(free_port()),
            ],
            env={**os.environ, "KUBECONFIG": state.kubeconfig, "RIDGELINE_RESYNC_SECONDS": "30"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)
        items = []
        for i in range(n_models):
            model = MODELS[i % len(MODELS)]
            context = 512 if model == "tiny-llama" else 2048
            items.append(
                {
                    "apiVersion": "ridgeline.dev/v1alpha1",
                    "kind": "InferenceModel",
                    "metadata": {"name": f"m{i:04d}", "namespace": "bench"},
                    "spec": {
                        "model": {"uri": uris[model]},
                        "workload": {"maxContextTokens": context},
                        "replicas": {"min": 0, "max": 2},
                    },
                }
            )
        start = time.monotonic()
        reconciles_before = _scrape(metrics_port, "ridgeline_operator_reconciles_total")
        kubectl(
            state,
            "apply",
            "--server-side",
            "-f",
            "-",
            input_=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        planned = 0
        while time.monotonic() - start < 600:
            out = kubectl(state, "get", "-n", "bench", "im", "-o", "json").stdout
            planned = sum(
                1
                for obj in json.loads(out)["items"]
                if any(
                    c["type"] == "Applied" and c["status"] == "True"
                    for c in (obj.get("status") or {}).get("conditions", [])
                )
            )
            if planned == n_models:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        reconciles = (
            _scrape(metrics_port, "ridgeline_operator_reconciles_total") - reconciles_before
        )
        peak = _peak_rss_mib(proc.pid)
        rayservices = len(
            json.loads(kubectl(state, "get", "-n", "bench", "rayservices", "-o", "json").stdout)[
                "items"
            ]
        )
        proc.terminate()
        proc.wait(timeout=30)
        return {
            "models": n_models,
            "nodes": nodes_per_pool * len(POOLS),
            "planned": planned,
            "seconds": elapsed,
            "reconciles": reconciles,
            "reconciles_per_s": reconciles / elapsed,
            "peak_mib": peak,
            "rayservices": rayservices,
        }
    finally:
        down(Path(state.workdir))


def main() -> None:
    base = int(os.environ.get("BENCH_MODELS", "200"))
    with tempfile.TemporaryDirectory(prefix="ridgeline-opbench-") as tmp:
        one = run(base, Path(tmp))
        two = run(2 * base, Path(tmp))
    rows = [
        "| models | nodes (4 pools) | all applied in | reconciles | reconciles/s | operator peak RSS | RayServices |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (one, two):
        rows.append(
            f"| {r['models']:.0f} | {r['nodes']:.0f} | {r['seconds']:.1f} s | {r['reconciles']:.0f} | "
            f"{r['reconciles_per_s']:.1f} | {r['peak_mib']:.0f} MiB | {r['rayservices']:.0f} |"
        )
    rows += [
        "",
        f"2x / 1x: time {two['seconds'] / one['seconds']:.2f}x, reconciles/s "
        f"{two['reconciles_per_s'] / one['reconciles_per_s']:.2f}x, peak memory {two['peak_mib'] / one['peak_mib']:.2f}x.",
        "",
        "One operator process (kopf, sync handlers in its thread pool), the API server, etcd and the "
        "benchmark share 2 cores; each reconcile plans, renders and server-side applies one RayService.",
    ]
    text = "\n".join(rows)
    print(text)
    write_section("Operator", text)


if __name__ == "__main__":
    main()
