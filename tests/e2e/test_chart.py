"""The Helm chart against the loopback control plane: lint, templates validated by the real
API server, bad values refused by values.schema.json, install with the operator Deployment
Available on a fake node, and `helm test`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ridgeline.platform_config import PlatformConfig
from ridgeline_dev.cluster import ClusterState, kubectl
from tests.e2e.conftest import get_json, wait_for
from tests.e2e.test_operator import helm

pytestmark = pytest.mark.cluster
CHART = Path(__file__).resolve().parents[2] / "charts" / "ridgeline"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
NS = "ridgeline-chart"


def run_helm(
    cluster: ClusterState, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm(), "--kubeconfig", cluster.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def template(cluster: ClusterState, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_helm(
        cluster,
        "template",
        "rlc",
        str(CHART),
        "-n",
        NS,
        "--kube-version",
        "1.36.3",
        *extra,
        check=False,
    )


def test_lint(cluster: ClusterState) -> None:
    run_helm(
        cluster, "lint", str(CHART), "--kube-version", "1.36.3", "--strict", "-f", str(CI_VALUES)
    )


@pytest.mark.parametrize("values", [None, CI_VALUES])
def test_templates_are_accepted_by_the_api_server(
    cluster: ClusterState, values: Path | None
) -> None:
    out = template(cluster, *(["-f", str(values)] if values else []))
    assert out.returncode == 0, out.stderr
    kubectl(cluster, "create", "namespace", NS, check=False)
    kubectl(cluster, "create", "namespace", "models", check=False)  # ci-values watches it
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    # Secrets: cluster-wide only when every namespace is watched, else per watched namespace
    cluster_rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    secret_rules = [r for r in cluster_rules if "secrets" in r["resources"]]
    roles = [d for d in docs if d["kind"] == "Role"]
    if values is None:
        assert secret_rules == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}
        ]
        assert roles == []
    else:
        assert secret_rules == []
        assert [(r["metadata"]["namespace"], r["rules"][0]["verbs"]) for r in roles] == [
            ("models", ["get", "create"])
        ]
    kinds = sorted(d["kind"] for d in docs)
    assert {
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
    } <= set(kinds)
    result = kubectl(
        cluster, "apply", "--dry-run=server", "-f", "-", input_=out.stdout, check=False
    )
    assert result.returncode == 0, result.stderr
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]["securityContext"]
    assert container == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    dashboards = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert dashboards
    json.loads(next(iter(dashboards[0]["data"].values())))


def test_monitors_are_opt_in(cluster: ClusterState) -> None:
    plain = template(cluster).stdout
    assert "ServiceMonitor" not in plain
    assert "PodMonitor" not in plain
    on = template(
        cluster,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(on) if d]
    assert "ServiceMonitor" in kinds
    assert "PodMonitor" in kinds


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("operator.resyncSeconds=0", "resyncSeconds"),
        ("serving.images[0].cuda=twelve", "cuda"),
        ("nodePools[0].name=Bad_Name", "name"),
        ("operator.imagee.tag=x", "imagee"),
        ("serving.upgradeStrategy=BlueGreen", "upgradeStrategy"),
        ("serving.weightsCacheVolume=pvc", "weightsCacheVolume"),
        ("serving.networkPolicy.enable=true", "enable"),
        ("serving.allocatableFraction=1.5", "allocatableFraction"),
    ],
)
def test_bad_values_are_refused(cluster: ClusterState, setting: str, complaint: str) -> None:
    out = template(cluster, "--set", setting)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert complaint in out.stderr


def test_install_reaches_available_and_helm_test_passes(
    cluster: ClusterState, fake_fleet: list[str]
) -> None:
    kubectl(cluster, "create", "namespace", "models", check=False)  # ci-values watches it
    run_helm(
        cluster,
        "install",
        "rlc",
        str(CHART),
        "-n",
        NS,
        "--create-namespace",
        "-f",
        str(CI_VALUES),
        "--wait",
        "--timeout",
        "120s",
    )

    def available() -> bool:
        dep = get_json(cluster, "-n", NS, "deployment", "rlc-operator")
        return any(
            c["type"] == "Available" and c["status"] == "True"
            for c in dep["status"].get("conditions", [])
        )

    wait_for("operator Deployment Available", available, 120)
    pod = get_json(cluster, "-n", NS, "pods", "-l", "app.kubernetes.io/instance=rlc")["items"][0]
    assert pod["spec"]["nodeName"].startswith("cpu-")  # the only node without the GPU taint
    config = yaml.safe_load(
        get_json(cluster, "-n", NS, "configmap", "rlc-operator")["data"]["config.yaml"]
    )
    assert config["nodePools"][0]["name"] == "h200-spot"
    # the operator's own config model reads what the chart mounts, every default included
    loaded = PlatformConfig.model_validate(config)
    assert loaded.network_policy.enabled
    assert loaded.weights_cache_volume == "emptyDir"
    tested = run_helm(cluster, "test", "rlc", "-n", NS, "--timeout", "120s")
    assert "Phase:          Succeeded" in tested.stdout
    run_helm(cluster, "uninstall", "rlc", "-n", NS, "--wait")
