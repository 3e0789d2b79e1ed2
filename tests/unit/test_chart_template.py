"""``helm template`` of the chart, no cluster: nameOverride, fullnameOverride and
serviceAccount.{create,name} reach every object that names or selects the operator, and the
Service and ServiceMonitor select exactly the pods the Deployment makes. helm is the toolchain's
(built under ~/.cache/ridgeline/bin, which CI does before pytest; built here if missing)."""

from __future__ import annotations

import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from ridgeline_dev.toolchain import MODULES, build
from tests.conftest import REPO

CHART = REPO / "charts" / "ridgeline"
NS = "ridgeline-system"


@cache
def _helm() -> str:
    return str(build(next(m for m in MODULES if m.name == "helm")) / "helm")


def _template(*sets: str) -> subprocess.CompletedProcess[str]:
    args = [_helm(), "template", "rl", str(CHART), "-n", NS, "--kube-version", "1.31.0"]
    args += ["--set", "metrics.serviceMonitor.enabled=true"]
    for value in sets:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _objects(*sets: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = _template(*sets)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _one(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for (k, _), o in objects.items() if k == kind]
    return found


def _selects_the_operator(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    deployment = _one(objects, "Deployment")
    selector: dict[str, str] = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert _one(objects, "Service")["spec"]["selector"] == selector
    assert _one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"] == selector
    return selector


def _bound_accounts(objects: dict[tuple[str, str], dict[str, Any]]) -> set[str]:
    return {
        s["name"]
        for (kind, _), o in objects.items()
        if kind in ("ClusterRoleBinding", "RoleBinding")
        for s in o["subjects"]
    }


def test_the_defaults() -> None:
    objects = _objects()
    assert _selects_the_operator(objects) == {
        "app.kubernetes.io/name": "ridgeline",
        "app.kubernetes.io/instance": "rl",
    }
    assert ("Deployment", "rl-operator") in objects
    assert ("ServiceAccount", "ridgeline-operator") in objects
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ridgeline-operator"
    assert _bound_accounts(objects) == {"ridgeline-operator"}


def test_name_override_renames_labels_and_selectors() -> None:
    objects = _objects("nameOverride=acme")
    assert _selects_the_operator(objects)["app.kubernetes.io/name"] == "acme"
    assert all(
        o["metadata"]["labels"]["app.kubernetes.io/name"] == "acme"
        for (kind, _), o in objects.items()
        if kind != "CustomResourceDefinition" and "labels" in o["metadata"]
    )


def test_fullname_override_names_the_operators_objects() -> None:
    objects = _objects("fullnameOverride=acme-ops")
    for kind in ("Deployment", "Service", "ConfigMap", "ClusterRole", "ServiceMonitor"):
        assert (kind, "acme-ops") in objects, kind
    assert not any(name.startswith("rl-operator") for _, name in objects)
    configmap = _one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "acme-ops"} in [v.get("configMap") for v in configmap]


def test_an_existing_service_account() -> None:
    objects = _objects("serviceAccount.create=false", "serviceAccount.name=platform-sa")
    assert not [name for kind, name in objects if kind == "ServiceAccount"]
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-sa"
    assert _bound_accounts(objects) == {"platform-sa"}


def test_a_named_service_account_the_chart_creates() -> None:
    objects = _objects("serviceAccount.name=ops-sa")
    assert ("ServiceAccount", "ops-sa") in objects
    assert _bound_accounts(objects) == {"ops-sa"}


@pytest.mark.parametrize("value", ["serviceAccount.create=maybe", "serviceAccount.token=x"])
def test_the_schema_refuses_what_it_does_not_know(value: str) -> None:
    out = _template(value)
    assert out.returncode != 0
    assert "serviceAccount" in out.stderr
