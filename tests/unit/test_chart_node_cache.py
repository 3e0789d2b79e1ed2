"""``helm template`` with ``nodeCache.enabled`` (issue 24): the agent's DaemonSet (the serving
image's ``ridgeline-node-cache``, root without capabilities, the node root as a hostPath, the
environment its settings read), its RBAC, the operator's extra RBAC, the opt-in PodMonitor, and
the operator's config; none of it with the defaults."""

from __future__ import annotations

from typing import Any

import yaml

from ridgeline.platform_config import PlatformConfig
from ridgeline_serving.node_cache.settings import from_env
from tests.unit.test_chart_template import NS, _objects, _one, _template

ENABLED = ("nodeCache.enabled=true",)
GIB = 2**30


def _rules(role: dict[str, Any]) -> dict[str, set[str]]:
    """resource -> verbs."""
    out: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for resource in rule["resources"]:
            out.setdefault(resource, set()).update(rule["verbs"])
    return out


def _agent(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = _one(objects, "DaemonSet")["spec"]["template"]["spec"]
    return pod


def test_the_defaults_install_no_agent_and_grant_no_volumes() -> None:
    objects = _objects()
    assert not [k for k, _ in objects if k in ("DaemonSet", "Role", "PodMonitor")]
    rules = _rules(objects[("ClusterRole", "rl-operator")])
    assert "persistentvolumes" not in rules
    assert "persistentvolumeclaims" not in rules
    config = yaml.safe_load(objects[("ConfigMap", "rl-operator")]["data"]["config.yaml"])
    assert PlatformConfig.model_validate(config).node_cache.enabled is False


def test_the_agent_runs_from_the_serving_image_with_only_what_it_needs() -> None:
    objects = _objects(*ENABLED, "nodeCache.hostPath=/mnt/nvme/weights")
    pod = _agent(objects)
    assert pod["serviceAccountName"] == "rl-node-cache"
    labels = _one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "node-cache"
    [agent] = pod["containers"]
    assert agent["image"] == "ghcr.io/ridgeline/serving:0.1.0-cu124"  # the first serving image
    assert agent["command"] == ["ridgeline-node-cache"]
    ctx = agent["securityContext"]
    assert ctx["runAsUser"] == 0  # writes the node directory; files 0644 for uid 1000
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in ctx
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["node-root"]["hostPath"] == {
        "path": "/mnt/nvme/weights",
        "type": "DirectoryOrCreate",
    }
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert mounts["node-root"] == "/mnt/nvme/weights"  # the same path as on the node
    assert {"name": "metrics", "containerPort": 9450} in agent["ports"]
    # GPU nodes' taint by default
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_the_agents_environment_is_what_its_settings_read() -> None:
    objects = _objects(
        *ENABLED,
        "nodeCache.sizeBudget=500Gi",
        "nodeCache.gracePeriodSeconds=600",
        "nodeCache.resyncSeconds=15",
    )
    [agent] = _agent(objects)["containers"]
    env: dict[str, str] = {}
    for var in agent["env"]:
        if "valueFrom" in var:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = {"spec.nodeName": "node-1", "metadata.namespace": NS}[field]
        else:
            env[var["name"]] = var["value"]
    settings = from_env(env)
    assert (settings.node, settings.namespace) == ("node-1", NS)
    assert str(settings.root) == "/var/lib/ridgeline/weights"
    assert settings.budget_bytes == 500 * GIB
    assert (settings.grace_s, settings.resync_s, settings.metrics_port) == (600, 15, 9450)


def test_agent_and_operator_rbac() -> None:
    objects = _objects(*ENABLED)
    agent = _rules(objects[("ClusterRole", "rl-node-cache")])
    assert agent == {
        "inferencemodels": {"get", "list", "watch"},
        "nodes": {"get"},
        "secrets": {"get"},
    }
    reports = objects[("Role", "rl-node-cache")]
    assert reports["metadata"]["namespace"] == NS
    assert _rules(reports) == {"configmaps": {"get", "create", "patch", "update"}}
    operator = _rules(objects[("ClusterRole", "rl-operator")])
    assert operator["persistentvolumes"] == {"get", "list", "create", "patch", "delete"}
    assert operator["persistentvolumeclaims"] == {"get", "list", "create", "patch", "delete"}
    assert "configmaps" not in operator  # the reports are read in the release namespace only
    read = objects[("Role", "rl-operator-node-cache-reports")]
    assert read["metadata"]["namespace"] == NS
    assert _rules(read) == {"configmaps": {"get", "list"}}
    bound = {
        (name, s["name"])
        for (kind, name), o in objects.items()
        if kind in ("ClusterRoleBinding", "RoleBinding")
        for s in o["subjects"]
    }
    assert ("rl-node-cache", "rl-node-cache") in bound
    assert ("rl-operator-node-cache-reports", "ridgeline-operator") in bound


def test_watched_namespaces_scope_the_agents_secrets() -> None:
    objects = _objects(*ENABLED, "operator.watchNamespaces={team-a}")
    assert "secrets" not in _rules(objects[("ClusterRole", "rl-node-cache")])
    role = objects[("Role", "rl-node-cache-secrets")]
    assert role["metadata"]["namespace"] == "team-a"
    assert _rules(role) == {"secrets": {"get"}}


def test_the_operators_config_takes_the_node_cache() -> None:
    objects = _objects(*ENABLED, "nodeCache.sizeBudget=1Ti", "nodeCache.image=reg/agent:1")
    config = PlatformConfig.model_validate(
        yaml.safe_load(objects[("ConfigMap", "rl-operator")]["data"]["config.yaml"])
    )
    cache = config.node_cache
    assert cache.enabled
    assert cache.namespace == NS
    assert cache.size_budget == 2**40
    assert cache.host_path == "/var/lib/ridgeline/weights"
    assert cache.image == "reg/agent:1"
    assert _agent(objects)["containers"][0]["image"] == "reg/agent:1"


def test_the_agents_pod_monitor_is_opt_in() -> None:
    assert not [k for k, n in _objects(*ENABLED) if k == "PodMonitor"]
    objects = _objects(*ENABLED, "metrics.nodeCacheMonitor.enabled=true")
    monitor = objects[("PodMonitor", "rl-node-cache")]
    pod_labels = _one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # without the agent, no monitor for it
    assert not [
        k for k, _ in _objects("metrics.nodeCacheMonitor.enabled=true") if k == "PodMonitor"
    ]


def test_the_schema_refuses_a_malformed_budget() -> None:
    out = _template(*ENABLED, "nodeCache.sizeBudget=lots")
    assert out.returncode != 0
    assert "sizeBudget" in out.stderr
