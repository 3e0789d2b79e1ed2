"""The loopback control plane itself: API server validation, RBAC, scheduling onto fake GPU
nodes, KubeRay turning a RayService into pods, and the S3 server."""

from __future__ import annotations

import json

import pytest

from ridgeline_dev.cluster import ClusterState, kubectl
from tests.e2e.conftest import get_json, wait_for

pytestmark = pytest.mark.cluster
NS = "ridgeline-e2e"


MODEL = """
apiVersion: ridgeline.dev/v1alpha1
kind: InferenceModel
metadata: {{name: {name}, namespace: ridgeline-e2e}}
spec:
  model: {{uri: "s3://models/tiny"}}
{extra}
"""


def test_crd_defaults_and_explain(cluster: ClusterState) -> None:
    kubectl(cluster, "apply", "-f", "-", input_=MODEL.format(name="defaults", extra=""))
    obj = get_json(cluster, "-n", NS, "inferencemodel", "defaults")
    assert obj["spec"]["quantization"] == "none"
    assert obj["spec"]["workload"]["maxContextTokens"] == 4096
    assert obj["spec"]["replicas"] == {"min": 1, "max": 1, "scaleDownDelaySeconds": 300}
    explained = kubectl(cluster, "explain", "inferencemodel.spec.workload.maxContextTokens").stdout
    assert "Sizes the KV cache" in explained
    printed = kubectl(cluster, "get", "-n", NS, "im", "defaults").stdout
    assert printed.split()[:7] == ["NAME", "MODEL", "GPU", "GPUS", "READY", "DESIRED", "STATUS"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  replicas: {min: 3, max: 1}", "replicas.min must not exceed replicas.max"),
        (
            "  workload: {mode: batch, slo: {timePerOutputTokenMs: 20}}",
            "slo applies to mode: online only",
        ),
        ("  quantization: fp3", 'Unsupported value: "fp3"'),
    ],
)
def test_cel_and_schema_refuse_bad_objects(cluster: ClusterState, extra: str, message: str) -> None:
    result = kubectl(
        cluster, "apply", "-f", "-", input_=MODEL.format(name="bad", extra=extra), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert kubectl(cluster, "get", "-n", NS, "im", "bad", check=False).returncode != 0


def test_bad_uri_is_refused_with_the_rules_message(cluster: ClusterState) -> None:
    doc = MODEL.format(name="baduri", extra="").replace("s3://models/tiny", "ftp://x/y")
    result = kubectl(cluster, "apply", "-f", "-", input_=doc, check=False)
    assert "model.uri must be s3://bucket/prefix" in result.stderr


def test_rbac_refuses_an_unprivileged_user(cluster: ClusterState) -> None:
    result = kubectl(cluster, "get", "pods", "-n", NS, user=True, check=False)
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower()
    assert 'User "dev-user" cannot list resource "pods"' in result.stderr


def _deployment(name: str, gpus: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                        ],
                        "containers": [
                            {
                                "name": "c",
                                "image": "example.invalid/gpu:1",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                            }
                        ],
                    },
                },
            },
        }
    )


def _pods(cluster: ClusterState, selector: str) -> list[dict]:  # type: ignore[type-arg]
    return get_json(cluster, "pods", "-n", NS, "-l", selector)["items"]  # type: ignore[no-any-return]


def test_gpu_deployment_runs_on_a_fake_gpu_node(
    cluster: ClusterState, fake_fleet: list[str]
) -> None:
    kubectl(cluster, "apply", "-f", "-", input_=_deployment("fits", 4))
    pod = wait_for(
        "a Running pod",
        lambda: next(
            (p for p in _pods(cluster, "app=fits") if p["status"].get("phase") == "Running"), None
        ),
    )
    assert pod["spec"]["nodeName"].startswith("h100-")  # type: ignore[index]


def test_too_many_gpus_stays_pending(cluster: ClusterState, fake_fleet: list[str]) -> None:
    kubectl(cluster, "apply", "-f", "-", input_=_deployment("toobig", 16))

    def unschedulable() -> str | None:
        for pod in _pods(cluster, "app=toobig"):
            for cond in pod["status"].get("conditions", []):
                if cond["type"] == "PodScheduled" and cond["status"] == "False":
                    return str(cond.get("message", ""))
        return None

    message = wait_for("PodScheduled=False", unschedulable)
    assert "Insufficient nvidia.com/gpu" in str(message)
    assert all(p["status"]["phase"] == "Pending" for p in _pods(cluster, "app=toobig"))


RAYSERVICE = {
    "apiVersion": "ray.io/v1",
    "kind": "RayService",
    "metadata": {"name": "sample", "namespace": NS},
    "spec": {
        "serveConfigV2": "applications:\n- name: app\n  import_path: app:deployment\n  route_prefix: /\n",
        "rayClusterConfig": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": "rayproject/ray:2.60.0",
                                "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                            }
                        ]
                    }
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": 1,
                    "minReplicas": 1,
                    "maxReplicas": 2,
                    "rayStartParams": {},
                    "template": {
                        "spec": {
                            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                            "tolerations": [
                                {
                                    "key": "nvidia.com/gpu",
                                    "operator": "Exists",
                                    "effect": "NoSchedule",
                                }
                            ],
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": "rayproject/ray:2.60.0-gpu",
                                    "resources": {
                                        "limits": {
                                            "cpu": "4",
                                            "memory": "16Gi",
                                            "nvidia.com/gpu": "2",
                                        }
                                    },
                                }
                            ],
                        }
                    },
                }
            ],
        },
    },
}


def test_rayservice_becomes_a_raycluster_with_pods_on_fake_nodes(
    cluster: ClusterState, fake_fleet: list[str]
) -> None:
    kubectl(cluster, "apply", "--server-side", "-f", "-", input_=json.dumps(RAYSERVICE))
    clusters = wait_for(
        "a RayCluster", lambda: get_json(cluster, "rayclusters", "-n", NS)["items"], 90
    )
    name = clusters[0]["metadata"]["name"]  # type: ignore[index]

    def running() -> list[dict] | None:  # type: ignore[type-arg]
        pods = _pods(cluster, f"ray.io/cluster={name}")
        kinds = {
            p["metadata"]["labels"].get("ray.io/node-type")
            for p in pods
            if p["status"].get("phase") == "Running"
        }
        return pods if {"head", "worker"} <= kinds else None

    pods = wait_for("head and worker pods Running", running, 120)
    worker = next(p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker")  # type: ignore[union-attr]
    assert worker["spec"]["nodeName"].startswith("h100-")
    assert worker["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_s3_put_and_ranged_get(cluster: ClusterState) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        aws_access_key_id=cluster.s3_access_key,
        aws_secret_access_key=cluster.s3_secret_key,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="harness")
    body = bytes(range(256)) * 1024
    s3.put_object(Bucket="harness", Key="blob", Body=body)
    part = s3.get_object(Bucket="harness", Key="blob", Range="bytes=1000-1999")
    assert part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    assert part["Body"].read() == body[1000:2000]
