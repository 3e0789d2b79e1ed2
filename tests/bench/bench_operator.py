"""Operator scale: N InferenceModels across N/2 fake GPU nodes (kwok) in 4 pools on the loopback
control plane (KubeRay's CRDs, no KubeRay controller: the operator alone is measured).

Per size: time until every model is Applied, reconciles, operator peak memory, the operator's
CPU seconds per minute once nothing changes, and how many models one node's relabelling woke
(against how many are planned on that node's pool). Then the same at 2x, as ratios. The load
average of the (shared) machine is printed next to the figures. Writes docs/benchmarks.md
(section "Operator")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_report import write_section
from kubernetes import client, config

from ridgeline.planner import NodePool
from ridgeline_dev.checkpoints import write_skeleton
from ridgeline_dev.cluster import ClusterState, down, free_port, kubectl, up
from ridgeline_dev.fleet import node_manifests

REPO = Path(__file__).resolve().parents[2]
POOLS = [
    ("h100", "NVIDIA-H100-80GB-HBM3", 8, "550.54.15"),
    ("a100", "NVIDIA-A100-SXM4-80GB", 8, "535.104.05"),
    ("l40s", "NVIDIA-L40S", 4, "570.124.06"),
    ("l4", "NVIDIA-L4", 1, "570.124.06"),
]
MODELS = ["tiny-llama", "llama-3.1-8b", "qwen2-7b", "mistral-7b-v0.3"]
IDLE_S = 60.0
RESYNC_S = 300.0  # the operator's default (RIDGELINE_RESYNC_SECONDS unset)
TIMEOUT_S = 900.0
# kwok's nodes renew a Lease and post their status every 10-20 min, as kubelets do (the
# "status" heartbeat posts it every 20-45 s: BENCH_HEARTBEAT=status).
HEARTBEAT = os.environ.get("BENCH_HEARTBEAT", "lease")
# Commit f9c4c7d (kopf's own session: a new TLS connection for every concurrent request;
# kwok's nodes posting their status every 20-45 s), the same benchmark otherwise.
PREVIOUS = [
    "| 1000 | 500 | 46.6 s | 28.0 CPU s | 1052 | 22.6 | 439 MiB | 4.97 CPU s/min (8.3% of a "
    "core) | 1000 on 125 nodes; 0 / 0; 1000 / 1000 |",
    "| 2000 | 1000 | 155.2 s | 87.9 CPU s | 2022 | 13.0 | 1013 MiB | 11.72 CPU s/min (19.5% of a "
    "core) | 2000 on 250 nodes; 0 / 0; 2000 / 2000 |",
]
# Before issue #13 (commit 3560975: pools from every node per reconcile, a 10 s timer per model).
BASELINE = [
    "| 200 | 100 | 6.3 s | not measured | 200 | 31.9 | 143 MiB | not measured | not measured |",
    "| 400 | 200 | 20.2 s | not measured | 400 | 19.8 | 151 MiB | not measured | not measured |",
]


def _config(name: str) -> dict[str, Any]:
    return dict(json.loads((REPO / "examples" / "models" / name / "config.json").read_text()))


def _scrape(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in want)
    )


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)


def _settled(read: Callable[[], float], quiet_s: float, timeout_s: float) -> float:
    """Wait until ``read()`` has not moved for ``quiet_s``; its value then."""
    deadline = time.monotonic() + timeout_s
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def _fleet(api: client.ApiClient, pools: list[NodePool]) -> None:
    """The fake GPU nodes, created and given capacity through the API (kwok makes them Ready)."""
    core = client.CoreV1Api(api)

    def create(node: dict[str, Any]) -> None:
        core.create_node({k: v for k, v in node.items() if k != "status"})
        core.patch_node_status(
            node["metadata"]["name"],
            {"status": node["status"]},
            _content_type="application/merge-patch+json",
        )

    _parallel(create, node_manifests(pools))


def _create_models(api: client.ApiClient, items: list[dict[str, Any]]) -> None:
    custom = client.CustomObjectsApi(api)
    _parallel(
        lambda obj: custom.create_namespaced_custom_object(
            "ridgeline.dev", "v1alpha1", "bench", "inferencemodels", obj
        ),
        items,
    )


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> None:
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(fn, items):
            pass


def _applied(state: ClusterState) -> list[dict[str, Any]]:
    items = json.loads(kubectl(state, "get", "-n", "bench", "im", "-o", "json").stdout)["items"]
    return [
        obj
        for obj in items
        if any(
            c["type"] == "Applied" and c["status"] == "True"
            for c in (obj.get("status") or {}).get("conditions", [])
        )
    ]


def _models(n: int, uris: dict[str, str]) -> list[dict[str, Any]]:
    items = []
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        items.append(
            {
                "apiVersion": "ridgeline.dev/v1alpha1",
                "kind": "InferenceModel",
                "metadata": {"name": f"m{i:04d}", "namespace": "bench"},
                "spec": {
                    "model": {"uri": uris[model]},
                    "workload": {"maxContextTokens": 512 if model == "tiny-llama" else 2048},
                    "replicas": {"min": 0, "max": 2},
                },
            }
        )
    return items


def run(n_models: int, work: Path) -> dict[str, float]:
    load_before = os.getloadavg()[0]
    state = up(
        work / f"cluster-{n_models}", with_kuberay=False, with_s3=False, node_heartbeat=HEARTBEAT
    )
    try:
        nodes_per_pool = n_models // 2 // len(POOLS)
        pools = [
            NodePool(name=n, gpu_product=p, gpus_per_node=g, driver_version=d, nodes=nodes_per_pool)
            for n, p, g, d in POOLS
        ]
        api = config.new_client_from_config(state.kubeconfig)
        _fleet(api, pools)
        uris = {m: write_skeleton(_config(m), work / "models" / m).as_uri() for m in MODELS}
        kubectl(state, "create", "namespace", "bench")
        # The models exist before the operator starts (as after an upgrade of the operator,
        # or a backlog): the time is the operator's, not kubectl's pace at creating them.
        _create_models(api, _models(n_models, uris))
        port = free_port()
        log = (work / f"operator-{n_models}.log").open("w")
        start = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                *_memray(work / f"operator-{n_models}.memray"),
                "-m",
                "ridgeline.cli",
                "operator",
                "--metrics-port",
                str(port),
                "--health-port",
                str(free_port()),
            ],
            # The default (slow) resync: RIDGELINE_RESYNC_SECONDS is not set.
            env={
                **{k: v for k, v in os.environ.items() if k != "RIDGELINE_RESYNC_SECONDS"},
                "KUBECONFIG": _verifying_kubeconfig(
                    state, work / f"operator-{n_models}.kubeconfig"
                ),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait("operator metrics", lambda: _up(port), 60, 0.2)

        def all_applied_in_metrics() -> bool:
            applied = _scrape(port, "ridgeline_operator_models", condition="Applied", status="True")
            return applied >= n_models

        _wait("every model Applied (metrics)", all_applied_in_metrics, TIMEOUT_S, 0.5)
        elapsed = time.monotonic() - start
        load_converged = os.getloadavg()[0]
        converge_cpu_s = _cpu_s(proc.pid)
        converge_peak = _peak_rss_mib(proc.pid)  # the high-water mark so far: convergence
        reconciles = _scrape(port, "ridgeline_operator_reconciles_total")
        # What the operator decided is in the API too (each pass writes its status before the
        # next): one list every 2 s, not a poll that would load the API server it measures.
        _wait("every model Applied (API)", lambda: len(_applied(state)) == n_models, 120, 2.0)

        # Nothing changes from here on. The passes the RayServices' creation woke run out; then,
        # once the first resyncs are due (each model's first lands in the second period, spread
        # over it), the operator's CPU is measured over a minute of steady resyncs.
        _settled(lambda: _woken(port), 10, 600)
        time.sleep(max(0.0, start + RESYNC_S + 10.0 - time.monotonic()))
        cpu0, resync0, passes0 = (
            _cpu_s(proc.pid),
            _scrape(port, "ridgeline_operator_reconcile_triggers_total", trigger="resync"),
            _scrape(port, "ridgeline_operator_reconciles_total"),
        )
        spy = _profile(proc.pid, work / f"idle-{n_models}.txt")
        time.sleep(IDLE_S)
        if spy is not None:
            spy.wait(timeout=60)
        idle_cpu_per_min = (_cpu_s(proc.pid) - cpu0) * 60.0 / IDLE_S
        idle_rss = _rss_mib(proc.pid)
        resyncs = (
            _scrape(port, "ridgeline_operator_reconcile_triggers_total", trigger="resync") - resync0
        )
        idle_passes = _scrape(port, "ridgeline_operator_reconciles_total") - passes0

        # The most used pool's driver is upgraded, node by node. The first node makes a pool
        # of its own and the old pool only shrinks: no model is woken (no decision reads node
        # counts). When the last node leaves, the old pool is gone: exactly its models are
        # woken, once each, re-planned onto the new pool and re-applied.
        by_pool: dict[str, int] = {}
        for obj in _applied(state):
            pool = obj["status"]["plan"]["pool"]
            by_pool[pool] = by_pool.get(pool, 0) + 1
        pool_name, on_pool = max(by_pool.items(), key=lambda kv: kv[1])
        nodes = [
            n["metadata"]["name"]
            for n in json.loads(kubectl(state, "get", "nodes", "-o", "json").stdout)["items"]
            if _pool_of(n, pools) == pool_name
        ]
        core = client.CoreV1Api(api)

        def upgrade(name: str) -> None:
            core.patch_node(name, {"metadata": {"labels": _driver_labels("580.65.06")}})

        def woken_and_applied() -> tuple[float, float]:
            woken = _settled(
                lambda: _scrape(
                    port, "ridgeline_operator_reconcile_triggers_total", trigger="pools"
                ),
                5,
                300,
            )
            return woken, _scrape(port, "ridgeline_operator_reconciles_total", result="applied")

        woken0, applied0 = woken_and_applied()
        upgrade(nodes[0])
        woken1, applied1 = woken_and_applied()
        _parallel(upgrade, nodes[1:])
        woken2, applied2 = woken_and_applied()
        rayservices = len(
            json.loads(kubectl(state, "get", "-n", "bench", "rayservices", "-o", "json").stdout)[
                "items"
            ]
        )
        peak = _peak_rss_mib(proc.pid)  # the high-water mark of the whole run
        proc.terminate()
        proc.wait(timeout=60)
        if os.environ.get("BENCH_LOGS"):
            keep = Path(os.environ["BENCH_LOGS"])
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"operator-{n_models}.log").write_text(
                (work / f"operator-{n_models}.log").read_text()
            )
        return {
            "models": n_models,
            "nodes": nodes_per_pool * len(POOLS),
            "seconds": elapsed,
            "converge_cpu_s": converge_cpu_s,
            "reconciles": reconciles,
            "reconciles_per_s": reconciles / elapsed,
            "peak_mib": peak,
            "converge_peak_mib": converge_peak,
            "idle_rss_mib": idle_rss,
            "idle_cpu_s_per_min": idle_cpu_per_min,
            "idle_resyncs": resyncs,
            "idle_passes": idle_passes,
            "rayservices": rayservices,
            "on_pool": on_pool,
            "pool_nodes": len(nodes),
            "woken_one": woken1 - woken0,
            "applied_one": applied1 - applied0,
            "woken_all": woken2 - woken1,
            "applied_all": applied2 - applied1,
            "load_before": load_before,
            "load_converged": load_converged,
            "load_after": os.getloadavg()[0],
        }
    finally:
        down(Path(state.workdir))


def _profile(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE set: py-spy samples the operator over the idle minute (every thread,
    collapsed stacks) into BENCH_PROFILE's folder, to say where its idle CPU goes."""
    folder = os.environ.get("BENCH_PROFILE")
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not folder or spy is None:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    target = Path(folder) / out.name
    cmd = [spy, "record", "-p", str(pid), "-d", str(int(IDLE_S)), "-r", "50", "-f", "raw"]
    return subprocess.Popen([*cmd, "-o", str(target), "--nonblocking"])


def _memray(out: Path) -> list[str]:
    """With BENCH_MEMRAY set: the operator runs under memray (native stacks too), its capture
    kept in BENCH_MEMRAY's folder, to say what holds the operator's memory at its peak
    (`memray flamegraph` / `memray summary`). Peak RSS then includes memray's own."""
    folder = os.environ.get("BENCH_MEMRAY")
    if not folder:
        return []
    Path(folder).mkdir(parents=True, exist_ok=True)
    return ["-m", "memray", "run", "--native", "-q", "-o", str(Path(folder) / out.name)]


def _verifying_kubeconfig(state: ClusterState, path: Path) -> str:
    """The admin kubeconfig, but checking the API server's certificate the way a pod does
    with its service account's CA (the harness's kubeconfigs skip the check, and urllib3
    then warns on every request: a cost the operator does not have in a cluster)."""
    kubeconfig = json.loads(Path(state.kubeconfig).read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"].pop("insecure-skip-tls-verify", None)
        entry["cluster"]["certificate-authority"] = str(
            Path(state.workdir) / "certs" / "apiserver.crt"
        )
    path.write_text(json.dumps(kubeconfig))
    return str(path)


def _woken(port: int) -> float:
    """Passes woken by anything but the resync (spec, RayService, RayCluster, pools, status,
    retry): still moving means the operator is still working through a change. One scrape:
    the total and the resyncs read apart would differ by the resyncs in between."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    name = "ridgeline_operator_reconcile_triggers_total{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and 'trigger="resync"' not in line
    )


def _up(port: int) -> bool:
    try:
        _scrape(port, "ridgeline_operator_reconciles_total")
    except OSError:
        return False
    return True


def _driver_labels(driver: str) -> dict[str, str]:
    major, minor, rev = driver.split(".")
    gfd = "nvidia.com/cuda.driver-version"
    return {
        f"{gfd}.full": driver,
        f"{gfd}.major": major,
        f"{gfd}.minor": minor,
        f"{gfd}.revision": rev,
        "nvidia.com/cuda.driver.major": major,
        "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
    }


def _pool_of(node: dict[str, Any], pools: list[NodePool]) -> str:
    from ridgeline.discovery import discover_pools

    labels = node["metadata"].get("labels") or {}
    found = discover_pools([(labels, node["status"].get("allocatable") or {}, True)])
    return found[0].name if found else ""


def main() -> None:
    base = int(os.environ.get("BENCH_MODELS", "1000"))
    with tempfile.TemporaryDirectory(prefix="ridgeline-opbench-") as tmp:
        one = run(base, Path(tmp))
        print(json.dumps(one), flush=True)
        two = run(2 * base, Path(tmp))
        print(json.dumps(two), flush=True)
    rows = [
        "| models | nodes (4 pools) | all Applied in (from operator start) | operator CPU until "
        "then | reconciles | reconciles/s | operator peak RSS | idle operator CPU | the busiest "
        "pool's driver upgraded: models on it; woken / re-applied after its first node; after "
        "all its nodes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (one, two):
        rows.append(
            f"| {r['models']:.0f} | {r['nodes']:.0f} | {r['seconds']:.1f} s | "
            f"{r['converge_cpu_s']:.1f} CPU s | {r['reconciles']:.0f} | {r['reconciles_per_s']:.1f} | {r['peak_mib']:.0f} MiB ("
            f"{r['converge_peak_mib']:.0f} until converged; {r['idle_rss_mib']:.0f} idle) | "
            f"{r['idle_cpu_s_per_min']:.2f} CPU s/min ({r['idle_cpu_s_per_min'] / 60 * 100:.1f}% "
            f"of a core; {r['idle_passes']:.0f} passes, {r['idle_resyncs']:.0f} of them resyncs) | "
            f"{r['on_pool']:.0f} on {r['pool_nodes']:.0f} nodes; {r['woken_one']:.0f} / "
            f"{r['applied_one']:.0f}; {r['woken_all']:.0f} / {r['applied_all']:.0f} |"
        )
    ratio = two["seconds"] / one["seconds"]
    rows += [
        "",
        f"2x / 1x: time {ratio:.2f}x (target at most 2.2x), operator CPU "
        f"{two['converge_cpu_s'] / one['converge_cpu_s']:.2f}x, reconciles/s "
        f"{two['reconciles_per_s'] / one['reconciles_per_s']:.2f}x, peak memory "
        f"{two['peak_mib'] / one['peak_mib']:.2f}x. Targets at {one['models']:.0f} models: idle "
        f"CPU under 5% of a core, peak memory under 300 MiB.",
        "",
        f"Machine: 2-core box shared with other engineers' work; 1-minute load average "
        f"{one['load_before']:.1f} before, {one['load_converged']:.1f} at convergence and "
        f"{one['load_after']:.1f} after the {one['models']:.0f}-model run; "
        f"{two['load_before']:.1f}, {two['load_converged']:.1f} and {two['load_after']:.1f} "
        f"for the {two['models']:.0f}-model run. Times are noisy under that load; the ratio "
        "is from one run, the two sizes back to back.",
        "",
        f"Nodes: kwok's `{HEARTBEAT}` heartbeat ("
        + (
            "a Lease renewed every 10 s, the Node's status posted every 10-20 min, as kubelets "
            "with node leases do; a kubelet posts it every 5 min when nothing changed"
            if HEARTBEAT == "lease"
            else "the Node's whole status every 20-45 s"
        )
        + "). "
        "One operator process (kopf; reconciles in threads), the API server, etcd, kwok and the "
        "benchmark share the machine; the operator verifies the API server's certificate as in "
        "a pod. The models exist before the operator starts, so the time is the operator's, "
        "not kubectl's pace at creating them. Each model is reconciled when it is first seen "
        "and once more when its RayService appears; then only its RayService, its RayClusters, "
        "a change of its pool or the resync wake it. The resync (every 300 s) first comes in "
        "the second period after a model's daemon starts, spread at random over it, so the "
        "idle CPU is measured from 310 s after the operator started, over a minute of steady "
        "resyncs (about one model in 300 per second). Peak RSS is the operator's high-water "
        "mark (VmHWM) over the whole run. The driver upgrade relabels the nodes of the pool "
        "with the most models: the first node makes a pool of its own and the old pool only "
        "shrinks (no decision reads node counts, so no model wakes); once the last node has "
        "left, the old pool is gone and exactly its models wake, once each, and move to the "
        "new pool.",
        "",
        "The previous run (commit f9c4c7d: kopf's own API session, which opens a new TLS "
        "connection for every concurrent request, about 700 at start-up with 256 KiB of read "
        "buffer each; kwok's nodes posting their whole status every 20-45 s):",
        "",
        "| models | nodes (4 pools) | all Applied in | operator CPU until then | reconciles "
        "| reconciles/s | operator peak RSS | idle operator CPU | pool's driver upgraded |",
        "|---|---|---|---|---|---|---|---|---|",
        *PREVIOUS,
        "",
        "2x / 1x then: time 3.33x, operator CPU 3.14x, peak memory 2.30x.",
        "",
        "Before issue #13 (pools from every node in each reconcile, a 10 s timer per model; "
        "resync set to 30 s for that run, timed from `kubectl apply` of the models with the "
        "operator running):",
        "",
        "| models | nodes (4 pools) | all Applied in | operator CPU until then | reconciles "
        "| reconciles/s | operator peak RSS | idle operator CPU | pool's driver upgraded |",
        "|---|---|---|---|---|---|---|---|---|",
        *BASELINE,
        "",
        "2x / 1x then: time 3.23x, reconciles/s 0.62x.",
    ]
    text = "\n".join(rows)
    print(text)
    write_section("Operator", text)


if __name__ == "__main__":
    main()
