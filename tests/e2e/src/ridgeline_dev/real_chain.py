"""What the real-node tests share: a cluster whose node runs real pods from the operator and
serving images, the chart installed with Helm, namespaces at a Pod Security level, and a
private tiny model in MinIO behind a ``credentialsSecret`` the pods reach through the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ridgeline_dev import images, node
from ridgeline_dev.cluster import ClusterState, down, dump_logs, kubectl, up
from ridgeline_dev.s3server import ready as s3_ready
from ridgeline_dev.tiny_model import upload_dir, write_tiny_model
from ridgeline_dev.toolchain import ensure_all

REPO = Path(__file__).resolve().parents[4]
CHART = REPO / "charts" / "ridgeline"
SYSTEM = "ridgeline-system"
BUCKET = "private-models"
SECRET = "models-s3"


@contextmanager
def real_node_cluster(name: str, serving: bool = True) -> Iterator[ClusterState]:
    """A control plane with MinIO and the real node, the operator image imported, and with
    ``serving`` KubeRay and the serving image too; torn down (by PID) afterwards, with the
    processes' logs printed if the start failed. Skips the test where this machine cannot run
    containers (it says what it lacks)."""
    lacks = node.missing()
    if lacks:
        import pytest  # only where a test runs it: the harness's CLI does not need pytest

        pytest.skip("this machine cannot run containers; it lacks: " + "; ".join(lacks))
    specs = [images.operator_image(), *([images.serving_image()] if serving else [])]
    archives = [images.build(spec) for spec in specs]
    workdir = node.test_workdir(name)
    try:
        state = up(workdir, with_kuberay=serving, real_node=True)
        for archive in archives:
            node.import_image(state, archive)
    except Exception:
        if (workdir / "state.json").exists():
            print(dump_logs(ClusterState.load(workdir)))
        down(workdir)
        raise
    try:
        yield state
    finally:
        down(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def helm(state: ClusterState, *args: str) -> str:
    result = subprocess.run(
        [str(ensure_all()["helm"]), "--kubeconfig", state.kubeconfig, *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def chart_values(state: ClusterState) -> dict[str, Any]:
    """The images as imported (never pulled), a CPU pool the size of this machine's share."""
    operator_ref, operator_tag = images.operator_image().name.rsplit(":", 1)
    return {
        "operator": {
            "image": {"repository": operator_ref, "tag": operator_tag, "pullPolicy": "Never"}
        },
        "serving": {
            "images": [{"image": images.serving_image().name, "torch": "2.15.0"}],
            # Two cores for the whole machine: the head and one worker must both fit.
            "headResources": {"cpu": "250m", "memory": "2Gi"},
        },
        "nodePools": [
            {"name": "cpu", "gpuProduct": "cpu", "gpusPerNode": 0, "cpus": 1, "memoryGiB": 4}
        ],
    }


def install_chart(state: ClusterState, values: dict[str, Any], tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm(state, "install", "ridgeline", str(CHART), "-n", SYSTEM, "-f", str(values_file),
         "--wait", "--timeout", "180s")  # fmt: skip


def namespace(state: ClusterState, name: str, level: str = "restricted") -> None:
    """A namespace whose Pod Security admission enforces ``level``."""
    kubectl(state, "create", "namespace", name)
    kubectl(state, "label", "namespace", name, f"pod-security.kubernetes.io/enforce={level}")


def upload_private_model(state: ClusterState, tmp_path: Path, prefix: str, seed: int = 0) -> str:
    """A tiny random model under ``s3://private-models/<prefix>``; returns the URI."""
    model_dir = write_tiny_model(tmp_path / f"{prefix}-{seed}", seed=seed)
    return upload_dir(model_dir, BUCKET, prefix, state.s3_endpoint, state.s3_access_key,
                      state.s3_secret_key)  # fmt: skip


def apply_credentials(state: ClusterState, namespace_: str) -> None:
    """The model's own credentials: MinIO listens on the host's loopback, and pods reach it
    through the gateway relay."""
    s3_port = state.s3_endpoint.rsplit(":", 1)[1]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace_},
        "stringData": {
            "AWS_ACCESS_KEY_ID": state.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": state.s3_secret_key,
            "AWS_ENDPOINT_URL": f"http://{node.GATEWAY}:{s3_port}",
        },
    }
    kubectl(state, "apply", "-f", "-", input_=json.dumps(secret))


def inference_model(name: str, namespace_: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An InferenceModel of the private bucket's ``name``, read with the Secret above."""
    return {
        "apiVersion": "ridgeline.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": namespace_},
        "spec": {
            "model": {"uri": f"s3://{BUCKET}/{name}", "credentialsSecret": SECRET},
            "accelerators": ["cpu"],
            **spec,
        },
    }


def apply(state: ClusterState, obj: dict[str, Any]) -> None:
    kubectl(state, "apply", "-f", "-", input_=json.dumps(obj))


def seconds(stamp: str) -> float:
    """A Kubernetes timestamp as seconds since the epoch."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def stage(prefix: str, what: str, started: float) -> float:
    print(f"[{prefix}] {what}: {time.monotonic() - started:.0f}s", flush=True)
    return time.monotonic()


def stop_minio(state: ClusterState) -> None:
    """The object store down: nothing can be read from it until ``start_minio``."""
    from ridgeline_dev.cluster import stop_process

    assert stop_process(state, "minio"), "MinIO was not running"
    assert not s3_ready(state.s3_endpoint)


def start_minio(state: ClusterState) -> None:
    """MinIO again on its port, over the same data."""
    from ridgeline_dev.cluster import Launcher, free_port
    from ridgeline_dev.s3server import minio_argv, minio_env

    port = int(state.s3_endpoint.rsplit(":", 1)[1])
    argv = minio_argv(Path(state.workdir) / "s3", port, free_port())
    Launcher(state).start("minio", argv, env=minio_env(state.s3_access_key, state.s3_secret_key))
    deadline = time.monotonic() + 60
    while not s3_ready(state.s3_endpoint):
        assert time.monotonic() < deadline, "MinIO did not come back within 60 s"
        time.sleep(0.5)
