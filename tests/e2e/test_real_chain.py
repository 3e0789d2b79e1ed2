"""The whole chain on the real node, as a platform team and a user would run it: ``helm install``
the chart (the operator is a pod from the operator image, in a namespace enforcing Pod Security
``restricted``), a tiny CPU model in MinIO behind a ``credentialsSecret``, ``kubectl apply`` of
an InferenceModel, KubeRay's real head and worker pods from the CPU serving image passing
KubeRay's own probes, READY 1, an OpenAI completion through the serve Service from the host
(kube-proxy), scale to zero once idle (``replicas.min: 0``, a short ``scaleDownDelaySeconds``)
and back on the next request, whose cold start is measured, and ``kubectl delete`` removing
everything. Each stage's time is printed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    upload_private_model,
)
from tests.e2e.conftest import get_json, wait_for

pytestmark = pytest.mark.cluster
NS = "models"
MODEL = "tiny-chat"
# Serve removes the idle replica after this; the worker pod goes POD_IDLE_S (60 s) later.
SCALE_DOWN_DELAY_S = 10


def stage(what: str, started: float) -> float:
    print(f"[chain] {what}: {time.monotonic() - started:.0f}s", flush=True)
    return time.monotonic()


@pytest.fixture(scope="module")
def chain() -> Iterator[ClusterState]:
    t = time.monotonic()
    with real_node_cluster("chain") as state:
        stage("cluster with the real node, images built (or cached) and imported", t)
        yield state


def ready_replicas(state: ClusterState) -> int:
    obj = get_json(state, "-n", NS, "inferencemodel", MODEL)
    return int(obj.get("status", {}).get("replicas", {}).get("ready") or 0)


def test_helm_install_apply_serve_delete(chain: ClusterState, tmp_path: Path) -> None:
    from openai import APIStatusError, OpenAI

    t = time.monotonic()
    namespace(chain, SYSTEM)
    namespace(chain, NS)
    install_chart(chain, chart_values(chain), tmp_path)
    t = stage("helm install (operator pod Ready)", t)

    upload_private_model(chain, tmp_path, MODEL)
    apply_credentials(chain, NS)
    apply(chain, inference_model(MODEL, NS, {
        "workload": {"maxContextTokens": 512},
        "replicas": {"min": 0, "max": 1, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S},
    }))  # fmt: skip
    t = stage("model uploaded, InferenceModel applied", t)

    wait_for("READY 1", lambda: ready_replicas(chain) >= 1, 900)
    t = stage("READY 1 (operator plan, KubeRay pods, weights pulled, model loaded)", t)
    print(kubectl(chain, "get", "inferencemodels", "-n", NS).stdout)
    rs = get_json(chain, "-n", NS, "rayservices")["items"][0]
    print(f"[chain] RayService generation {rs['metadata']['generation']}", flush=True)
    for pod in get_json(chain, "-n", NS, "pods")["items"]:
        assert all(c["ready"] for c in pod["status"]["containerStatuses"]), pod["metadata"]["name"]

    ip = get_json(chain, "-n", NS, "service", f"{MODEL}-serve-svc")["spec"]["clusterIP"]
    client = OpenAI(base_url=f"http://{ip}:8000/v1", api_key="unused", timeout=600)
    try:
        answer = client.completions.create(model=MODEL, prompt="hello", max_tokens=8)
    except APIStatusError as exc:
        pytest.fail(f"first completion after READY: {diagnosis(chain, ip, exc)}")
    assert answer.choices[0].text
    t = stage(f"OpenAI completion through kube-proxy: {answer.choices[0].text!r}", t)

    # What KubeRay's probes run is in the serving image, and the dev harness is not.
    head = get_json(chain, "-n", NS, "pods", "-l", "ray.io/node-type=head")["items"][0]
    check = "command -v wget && ! python -c 'import ridgeline_dev' 2>/dev/null"
    kubectl(chain, "exec", "-n", NS, head["metadata"]["name"], "-c", "ray-head", "--",
            "sh", "-c", check)  # fmt: skip

    wait_for("the idle worker pod gone", lambda: not workers(chain), 240)
    t = stage(f"scaled to zero (idle {SCALE_DOWN_DELAY_S} s, then the pod's idle timeout)", t)
    cold_start(chain, client)
    t = time.monotonic()

    kubectl(chain, "delete", "-n", NS, "inferencemodel", MODEL, "--wait=true", "--timeout=180s")
    wait_for("the model's pods gone", lambda: not get_json(chain, "-n", NS, "pods")["items"], 180)
    assert not get_json(chain, "-n", NS, "rayservices")["items"]
    stage("kubectl delete removed the RayService and its pods", t)


def diagnosis(state: ClusterState, ip: str, exc: Any) -> str:
    """What answered, and what the cluster said then: which of Serve's proxies or the app, the
    routes the Service's proxies know, the RayService's generations and the namespace's
    events."""
    response = exc.response
    said = [
        f"{response.status_code} {response.text[:300]!r}, headers {dict(response.headers)}",
        f"/-/routes: {_get(f'http://{ip}:8000/-/routes')}",
    ]
    for slice_ in get_json(state, "-n", NS, "endpointslices")["items"]:
        ends = [(e.get("addresses"), e.get("conditions")) for e in slice_.get("endpoints") or []]
        said.append(f"endpointslice {slice_['metadata']['name']}: {ends}")
    for rs in get_json(state, "-n", NS, "rayservices")["items"]:
        status = rs.get("status") or {}
        conditions = [
            (c["type"], c["status"], c.get("reason")) for c in status.get("conditions") or []
        ]
        said.append(
            f"rayservice generation {rs['metadata']['generation']}, observed "
            f"{status.get('observedGeneration')}, conditions {conditions}"
        )
    for pod in get_json(state, "-n", NS, "pods")["items"]:
        labels = pod["metadata"].get("labels") or {}
        said.append(
            f"pod {pod['metadata']['name']} {pod['status'].get('podIP')} serve={labels.get('ray.io/serve')}"
        )
    said.append(kubectl(state, "get", "events", "-n", NS, "--sort-by=.lastTimestamp").stdout)
    return "\n".join(said)


def _get(url: str) -> str:
    import httpx

    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        return repr(exc)
    return f"{response.status_code} {response.text[:300]!r}"


def workers(state: ClusterState) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        state, "-n", NS, "pods", "-l", "ray.io/node-type=worker"
    )["items"]
    return items


def cold_start(state: ClusterState, client: Any) -> None:
    """A request to a model at zero replicas: time to its first token, and the parts the pod
    and the replica's start-up log show."""
    sent = time.time()
    stream = client.completions.create(model=MODEL, prompt="hello", max_tokens=8, stream=True)
    first = None
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            first = first or time.time()
            text += chunk.choices[0].text
    assert first is not None
    assert text
    print(f"[chain] cold start from zero, request sent -> first token: {first - sent:.0f}s")
    pod = workers(state)[0]
    created = seconds(pod["metadata"]["creationTimestamp"])
    worker = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "ray-worker")
    started = seconds(worker["state"]["running"]["startedAt"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    print(
        f"[chain]   pod created {created - sent:.0f}s after the request, ray-worker started "
        f"{started - created:.0f}s later (restarts {worker['restartCount']}), pod Ready "
        f"{ready['status']} since {seconds(ready['lastTransitionTime']) - sent:.0f}s",
        flush=True,
    )
    # The replica's start-up breakdown reaches `kubectl logs` (RAY_LOG_TO_STDERR), where an
    # SRE looks first, not only Ray's log files inside the pod.
    logs = kubectl(state, "logs", "-n", NS, pod["metadata"]["name"], "-c", "ray-worker").stdout
    ready = [line for line in logs.splitlines() if "replica ready in" in line]
    assert ready, "the replica's start-up line is not in `kubectl logs`"
    print(f"[chain]   replica: {ready[-1].strip()}", flush=True)
