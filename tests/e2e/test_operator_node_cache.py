"""The operator with the node weight cache enabled (issue 24) against the loopback control plane,
with the credentials of the chart's RBAC for that case only: applying a model creates its
PersistentVolume and claim (bound by the control plane's own volume binder), the status gets
``weights`` and ``Cached=False NoAgent``; an agent's report ConfigMap makes it ``Cached=True``,
and deleting the model deletes its volume; a volume left behind by a model deleted while the
operator was down is swept once it is back. No agent runs here (kwok nodes have no kubelet): the
test writes the report an agent would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from ridgeline.api.node_cache import (
    REPORT_KEY,
    CheckpointReport,
    NodeCacheReport,
    report_labels,
    report_name,
)
from ridgeline_dev.checkpoints import write_skeleton
from ridgeline_dev.cluster import OPERATOR_NAMESPACE, ClusterState, kubectl
from ridgeline_dev.prometheus import render_chart
from tests.conftest import example_config
from tests.e2e.conftest import get_json, wait_for
from tests.e2e.test_operator import (
    Operator,
    _secret,
    _upload,
    apply_chart_objects,
    condition,
    model,
    serve_args,
)

pytestmark = pytest.mark.cluster
NS = "models"
NAME = "cached"


@pytest.fixture(scope="module")
def node_cache_rbac(cluster: ClusterState) -> None:
    """The operator's ServiceAccount, ClusterRole (PersistentVolumes and claims included) and
    its Role reading the reports, rendered by helm with nodeCache.enabled."""
    docs = [
        d
        for d in render_chart(
            "--set", "nodeCache.enabled=true", namespace=OPERATOR_NAMESPACE, release="rl"
        )
        if d["kind"]
        in ("ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Role", "RoleBinding")
        and not d["metadata"]["name"].startswith("rl-node-cache")  # the agent's own
    ]
    apply_chart_objects(cluster, docs)


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterState,
    fake_fleet: list[str],
    node_cache_rbac: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    op = Operator(cluster, tmp_path_factory.mktemp("operator-node-cache"))
    config = yaml.safe_load(op.config.read_text())
    config["nodeCache"] = {"enabled": True, "namespace": OPERATOR_NAMESPACE}
    op.config.write_text(yaml.safe_dump(config))
    op.start()
    yield op
    op.stop()
    print(op.log.read_text()[-6000:])


@pytest.fixture(scope="module")
def tiny_uri(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private model in MinIO (the node cache covers object stores, not file:// models),
    read with the model's own credentials Secret."""
    root = tmp_path_factory.mktemp("node-cache-models")
    write_skeleton(example_config("tiny-llama"), root / "tiny-llama")
    _upload(cluster, root / "tiny-llama", "cached-models", "tiny")
    kubectl(cluster, "create", "namespace", NS, check=False)
    _secret(cluster, "cache-s3", cluster.s3_access_key, cluster.s3_secret_key)
    return "s3://cached-models/tiny"


def _model(cluster: ClusterState) -> dict[str, Any]:
    return dict(get_json(cluster, "-n", NS, "inferencemodel", NAME))


def _cached(cluster: ClusterState, status: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = _model(cluster)
        cond = condition(obj, "Cached")
        return obj if cond and (cond["status"], cond["reason"]) == (status, reason) else None

    return dict(wait_for(f"{NAME} Cached={status} {reason}", check, 60))


def _apply(cluster: ClusterState, name: str, uri: str) -> None:
    spec = model(
        name,
        uri,
        model={"uri": uri, "credentialsSecret": "cache-s3"},
        accelerators=["NVIDIA-H100-80GB-HBM3"],
        workload={"maxContextTokens": 1024},
        replicas={"min": 0, "max": 1},
    )
    kubectl(cluster, "apply", "-f", "-", input_=spec)


def _bound_claim(cluster: ClusterState, name: str) -> dict[str, Any]:
    """The claim the model's worker pods mount (read-only), once the control plane's volume
    binder has bound it to its volume."""

    def rendered() -> str | None:
        result = kubectl(cluster, "get", "-n", NS, "rayservice", name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        pod = json.loads(result.stdout)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0][
            "template"
        ]["spec"]
        [claim] = [v for v in pod["volumes"] if v["name"] == "node-weights"]
        assert claim["persistentVolumeClaim"]["readOnly"] is True
        return str(claim["persistentVolumeClaim"]["claimName"])

    claim_name = wait_for(f"{name}'s RayService with its claim", rendered, 60)

    def bound() -> dict[str, Any] | None:
        pvc = get_json(cluster, "-n", NS, "pvc", claim_name)
        return dict(pvc) if pvc.get("status", {}).get("phase") == "Bound" else None

    return dict(wait_for(f"claim {claim_name} Bound", bound, 60))


def test_node_cache_from_apply_to_cached_to_delete(
    cluster: ClusterState, operator: Operator, tiny_uri: str
) -> None:
    _apply(cluster, NAME, tiny_uri)
    obj = _cached(cluster, "False", "NoAgent")
    weights = obj["status"]["weights"]
    assert weights["uri"] == tiny_uri
    assert weights["nodeLabels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert weights["bytes"] > 0
    assert obj["status"]["plan"]["coldStart"]["nodeCacheSeconds"] > 0

    # the claim the worker pods mount, bound to its volume by the control plane
    rs = get_json(cluster, "-n", NS, "rayservice", NAME)
    assert serve_args(rs).node_cache_dir == "/var/lib/ridgeline/node-weights"
    pvc = _bound_claim(cluster, NAME)
    volume = pvc["spec"]["volumeName"]
    pv = get_json(cluster, "pv", volume)
    assert pv["spec"]["hostPath"]["path"].endswith("/" + weights["directory"])
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    # an agent's report: the checkpoint complete on one node of the pool
    entry = CheckpointReport(
        uri=weights["uri"],
        digest="0123456789abcdef",
        current_digest="0123456789abcdef",
        state="Complete",
        bytes=weights["bytes"],
        total_bytes=weights["bytes"],
        models=[f"{NS}/{NAME}"],
    )
    report = NodeCacheReport(
        node="h100-0",
        updated=datetime.now(UTC),
        budget_bytes=0,
        used_bytes=weights["bytes"],
        checkpoints={weights["directory"]: entry},
    )
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": report_name("h100-0"),
            "namespace": OPERATOR_NAMESPACE,
            "labels": report_labels("h100-0"),
        },
        "data": {REPORT_KEY: report.model_dump_json(by_alias=True)},
    }
    kubectl(cluster, "apply", "-f", "-", input_=json.dumps(configmap))
    try:
        obj = _cached(cluster, "True", "Complete")
        assert obj["status"]["weights"]["nodesComplete"] == 1
        assert obj["status"]["weights"]["nodes"] == 1
    finally:
        kubectl(cluster, "delete", "-n", OPERATOR_NAMESPACE, "configmap", report_name("h100-0"))

    kubectl(cluster, "delete", "-n", NS, "im", NAME, "--wait=true")
    # By the delete handler, not the sweep (which would also free a Released volume).
    handled = f"deleted 1 node cache PersistentVolume(s) of {NS}/{NAME}"
    wait_for(
        f"PersistentVolume {volume} deleted by the delete handler",
        lambda: _phase(cluster, volume) is None and handled in operator.log.read_text(),
        60,
    )
    assert f"deleted PersistentVolume {volume}: no model holds it" not in operator.log.read_text()


def _phase(cluster: ClusterState, volume: str) -> str | None:
    result = kubectl(cluster, "get", "pv", volume, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    return str(json.loads(result.stdout).get("status", {}).get("phase"))


def test_a_volume_whose_model_went_unseen_is_swept(
    cluster: ClusterState, operator: Operator, tiny_uri: str
) -> None:
    """With the operator down, the model's finalizer is stripped and the model deleted (what an
    admin does when its operator is gone): the claim goes with the model (owner reference) and
    leaves its volume Released, cluster-scoped and owned by nothing. The operator, back,
    deletes it."""
    name = "unseen"
    _apply(cluster, name, tiny_uri)
    volume = _bound_claim(cluster, name)["spec"]["volumeName"]
    operator.stop()
    try:
        patch = json.dumps({"metadata": {"finalizers": None}})
        kubectl(cluster, "patch", "-n", NS, "im", name, "--type=merge", "-p", patch)
        kubectl(cluster, "delete", "-n", NS, "im", name, "--wait=true")
        wait_for(
            f"PersistentVolume {volume} Released",
            lambda: _phase(cluster, volume) == "Released",
            60,
        )
    finally:
        operator.start()
    swept = f"deleted PersistentVolume {volume}: no model holds it any more"
    wait_for(
        f"PersistentVolume {volume} swept (and the operator's log line)",
        lambda: _phase(cluster, volume) is None and swept in operator.log.read_text(),
        60,
    )


@pytest.mark.parametrize("watched", [False, True])
def test_the_chart_with_the_node_cache_is_accepted_by_the_api_server(
    cluster: ClusterState, watched: bool
) -> None:
    """The DaemonSet, the agent's RBAC and the operator's, as the API server validates them
    (server-side dry run), cluster-wide and with watched namespaces."""
    sets = ["--set", "nodeCache.enabled=true", "--set", "nodeCache.sizeBudget=500Gi"]
    if watched:
        sets += ["--set", f"operator.watchNamespaces={{{NS}}}"]
    docs = render_chart(*sets, namespace=OPERATOR_NAMESPACE, release="rl")
    kubectl(cluster, "create", "namespace", OPERATOR_NAMESPACE, check=False)
    kubectl(cluster, "create", "namespace", NS, check=False)
    assert "DaemonSet" in {d["kind"] for d in docs}
    result = kubectl(
        cluster,
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input_=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        check=False,
    )
    assert result.returncode == 0, result.stderr
