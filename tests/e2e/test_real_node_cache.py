"""The node weight cache on the real node (issue 24), as a platform team enables it: ``helm
install`` with ``nodeCache.enabled`` (the agent's DaemonSet in the operator's namespace, the only
one at Pod Security ``privileged``), a private model in MinIO applied with ``replicas.min: 0``
into a ``restricted`` namespace. The agent fills the node's cache (``Cached=True``); once the
model is at zero replicas, MinIO is stopped and a request cold-starts a replica that loads the
weights from the node cache (its log says hit, 0 bytes from the store). MinIO back, a new
version of the model's objects fills a second version directory while the first, in use,
stays; deleting the model frees the checkpoint after the grace period. Each stage's time and
the cold start's split are printed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ridgeline_dev import images, node
from ridgeline_dev.cluster import ClusterState, kubectl
from ridgeline_dev.real_chain import (
    SYSTEM,
    apply,
    apply_credentials,
    chart_values,
    inference_model,
    install_chart,
    namespace,
    real_node_cluster,
    seconds,
    start_minio,
    stop_minio,
    upload_private_model,
)
from tests.e2e.conftest import get_json, wait_for

pytestmark = pytest.mark.cluster
NS, MODEL = "cached", "tiny-cached"
SCALE_DOWN_DELAY_S = 10
GRACE_S = 15
RESYNC_S = 3


def say(line: str) -> None:
    print(f"[node-cache] {line}", flush=True)


@pytest.fixture(scope="module")
def state() -> Iterator[ClusterState]:
    with real_node_cluster("node-cache") as cluster:
        yield cluster


def cache_values(state: ClusterState, root: Path) -> dict[str, Any]:
    out = chart_values(state)
    out["nodeCache"] = {
        "enabled": True,
        "hostPath": str(root),
        "sizeBudget": "1Gi",
        "gracePeriodSeconds": GRACE_S,
        "resyncSeconds": RESYNC_S,
        # The machine's two cores hold the operator, the head and a worker already.
        "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}},
    }
    return out


def model_object(state: ClusterState) -> dict[str, Any]:
    obj: dict[str, Any] = get_json(state, "-n", NS, "inferencemodel", MODEL)
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def workers(state: ClusterState) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        state, "-n", NS, "pods", "-l", "ray.io/node-type=worker"
    )["items"]
    return items


def worker_log(state: ClusterState, pod: dict[str, Any]) -> str:
    name = pod["metadata"]["name"]
    return kubectl(state, "logs", "-n", NS, name, "-c", "ray-worker").stdout


def current_digest(checkpoint: Path) -> str | None:
    try:
        return str(json.loads((checkpoint / "current").read_text())["digest"])
    except (OSError, ValueError, KeyError):
        return None


def test_cold_start_from_the_node_cache_with_the_store_down(
    state: ClusterState, tmp_path: Path
) -> None:
    from openai import OpenAI

    root = Path(state.workdir) / "node-weights"  # the node's disk: this machine's
    namespace(state, SYSTEM, "privileged")  # the agent's hostPath; nothing else needs it
    namespace(state, NS)  # restricted
    t = time.monotonic()
    install_chart(state, cache_values(state, root), tmp_path)
    agents = get_json(state, "-n", SYSTEM, "pods", "-l", "app.kubernetes.io/component=node-cache")
    assert len(agents["items"]) == 1, "one agent pod on the one node"
    t = stage("helm install with nodeCache.enabled (operator and agent Ready)", t)

    upload_private_model(state, tmp_path, MODEL, seed=0)
    apply_credentials(state, NS)
    apply(state, inference_model(MODEL, NS, {
        "workload": {"maxContextTokens": 512},
        "replicas": {"min": 0, "max": 1, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S},
    }))  # fmt: skip
    cached = wait_for(
        "Cached=True", lambda: condition(model_object(state), "Cached").get("status") == "True",
        600,
    )  # fmt: skip
    assert cached
    weights = model_object(state)["status"]["weights"]
    assert weights["nodesComplete"] == weights["nodes"] == 1, weights
    checkpoint = root / weights["directory"]
    first = current_digest(checkpoint)
    assert first is not None
    assert (checkpoint / first).is_dir()
    t = stage(f"applied -> Cached=True ({weights['bytes']} bytes on 1 of 1 node)", t)

    # The model's first replica (created with the RayService) goes once idle: zero replicas.
    wait_for("READY 1", lambda: (model_object(state).get("status", {}).get("replicas") or {})
             .get("ready"), 900)  # fmt: skip
    wait_for("the idle worker pod gone", lambda: not workers(state), 300)
    t = stage("first replica served, then scaled to zero", t)

    stop_minio(state)
    say("MinIO stopped: nothing can be read from the object store")
    ip = get_json(state, "-n", NS, "service", f"{MODEL}-serve-svc")["spec"]["clusterIP"]
    client = OpenAI(base_url=f"http://{ip}:8000/v1", api_key="unused", timeout=600)
    sent = time.time()
    answer = client.completions.create(model=MODEL, prompt="hello", max_tokens=8)
    answered = time.time()
    assert answer.choices[0].text
    (pod,) = workers(state)
    log = worker_log(state, pod)
    hits = [line for line in log.splitlines() if "weights from the node cache (hit)" in line]
    assert hits, "the replica did not load from the node cache:\n" + log[-3000:]
    ready = [line for line in log.splitlines() if "replica ready in" in line]
    assert ready, "no start-up line in the replica's log"
    assert "0 bytes from the store" in ready[-1], ready[-1]
    assert (
        get_json(state, "namespace", NS)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )
    split(pod, sent, answered, ready[-1])
    t = stage("cold start from zero with the store down, from the node cache", t)

    start_minio(state)
    upload_private_model(state, tmp_path, MODEL, seed=1)  # new objects: new ETags
    second = wait_for(
        "a second version filled",
        lambda: (d := current_digest(checkpoint)) != first and d,
        300,
    )
    assert (checkpoint / first).is_dir(), "the version a running replica holds was removed"
    t = stage(f"new objects -> version {second} filled beside {first} (in use)", t)

    kubectl(state, "delete", "-n", NS, "inferencemodel", MODEL, "--wait=true", "--timeout=180s")
    wait_for("the model's pods gone", lambda: not get_json(state, "-n", NS, "pods")["items"], 180)
    wait_for("the checkpoint freed", lambda: not checkpoint.exists(), GRACE_S + 180)
    pvs = get_json(state, "pv", "-l", f"ridgeline.dev/model={MODEL}")["items"]
    assert not pvs, [p["metadata"]["name"] for p in pvs]
    stage(f"model deleted -> checkpoint freed (grace {GRACE_S} s) and its volume gone", t)


def split(pod: dict[str, Any], sent: float, answered: float, ready_line: str) -> None:
    """The cold start's parts: the pod's start (its image already on the node), the replica's
    weights, load and warm-up (its own log line), and the image import it did not need."""
    created = seconds(pod["metadata"]["creationTimestamp"])
    worker = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "ray-worker")
    started = seconds(worker["state"]["running"]["startedAt"])
    say(f"cold start, request sent -> answer: {answered - sent:.0f}s")
    say(f"  pod created {created - sent:.0f}s after the request, ray-worker started "
        f"{started - created:.0f}s later")  # fmt: skip
    say(f"  replica: {ready_line.strip()}")
    imported = node.image_import_seconds(images.build(images.serving_image()))
    if imported is not None:
        say(f"  serving image import into the node's containerd (not paid: on the node "
            f"since the agent started): {imported:.0f}s")  # fmt: skip


def stage(what: str, started: float) -> float:
    say(f"{what}: {time.monotonic() - started:.0f}s")
    return time.monotonic()
