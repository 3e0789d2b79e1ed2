"""What a real cluster needs of the rendered objects: Pod Security "restricted", a writable
weight cache sized for the checkpoint, pods sized from the pool's nodes, one replica per pod,
Ray token auth and a NetworkPolicy, replica changes that leave the RayCluster alone, the
Recreate upgrade, and names KubeRay accepts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ridgeline.api import InferenceModel
from ridgeline.api.crd import build_crd
from ridgeline.api.inference_model import MAX_NAME_LENGTH
from ridgeline.compat import choose_image
from ridgeline.controller import Observed, decide
from ridgeline.planner import NodePool, plan_model
from ridgeline.platform_config import PlatformConfig, default_config
from ridgeline.rayservice_view import RayServiceView
from ridgeline.render import build_rayservice
from ridgeline.render.rayservice import CLUSTER_HASH, REPLICA_RESOURCE
from ridgeline.render.security import build_network_policy, build_ray_token_secret
from ridgeline.shape import ModelShape

GIB = 2**30
L4 = NodePool(
    name="l4",
    gpu_product="NVIDIA-L4",
    gpus_per_node=1,
    driver_version="550.54.15",
    cpus=4,
    memory_gib=15,
)
H100 = NodePool(
    name="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_per_node=8, driver_version="550.54.15"
)
CPU = NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, cpus=8, memory_gib=32)


def _model(name: str = "m", **spec: Any) -> InferenceModel:
    return InferenceModel.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"model": {"uri": "s3://models/m"}, **spec},
        }
    )


def _render(
    shape: ModelShape,
    pool: NodePool = L4,
    config: PlatformConfig | None = None,
    **spec: Any,
) -> dict[str, Any]:
    config = config or default_config()
    model = _model(**{"workload": {"maxContextTokens": 1024}, **spec})
    plan = plan_model(shape, model.spec, [pool])
    placement = choose_image(config, pool, model.spec.quantization)
    return build_rayservice(
        model,
        plan,
        placement,
        config,
        uid="u1",
        pool=pool,
        checkpoint_bytes=shape.checkpoint_bytes,
    )


def _pods(rs: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rs["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def _worker(rs: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return group


def _deployment(rs: dict[str, Any]) -> dict[str, Any]:
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    deployment: dict[str, Any] = app["deployments"][0]
    return deployment


# ---- names (item 4) ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama-3.1-8b-instruct", "8b", "a" * 48, "x-", "Llama"])
def test_names_kuberay_refuses_are_refused_with_the_limit(name: str) -> None:
    with pytest.raises(ValidationError, match=f"at most {MAX_NAME_LENGTH} characters"):
        _model(name)


def test_name_rule_is_a_cel_rule_on_the_crd_root() -> None:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    [rule] = root["x-kubernetes-validations"]
    assert "self.metadata.name.size() <= 47" in rule["rule"]
    assert "at most 47 characters" in rule["message"]
    _model("a" * 47)
    _model("llama-3-1-8b-instruct")


# ---- Pod Security "restricted" (item 8) and the cache (item 3) ------------------------------


def test_every_pod_and_container_meets_pod_security_restricted(shape_of) -> None:
    rs = _render(shape_of("tiny-llama"))
    for pod in _pods(rs):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert all("hostPath" not in v for v in pod.get("volumes", []))
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert "add" not in ctx["capabilities"]
            assert "hostPort" not in str(container.get("ports"))
    # KubeRay's autoscaler sidecar takes its context from autoscalerOptions
    auto = rs["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    assert auto["allowPrivilegeEscalation"] is False
    assert auto["capabilities"] == {"drop": ["ALL"]}


def test_default_cache_is_an_empty_dir_requested_at_the_checkpoint_size(shape_of) -> None:
    shape = shape_of("llama-3.1-8b")
    rs = _render(shape, H100)
    pod = _worker(rs)["template"]["spec"]
    assert pod["volumes"] == [{"name": "weights-cache", "emptyDir": {}}]
    resources = pod["containers"][0]["resources"]
    request_gib = int(resources["requests"]["ephemeral-storage"].removesuffix("Gi"))
    assert request_gib * GIB >= shape.checkpoint_bytes + 2 * GIB
    assert request_gib * GIB < shape.checkpoint_bytes + 4 * GIB
    # no limit: a pod over its limit is evicted outright
    assert "ephemeral-storage" not in resources["limits"]
    assert pod["securityContext"]["fsGroup"] == 1000


def test_host_path_cache_is_handed_to_the_replica_user_first(shape_of) -> None:
    config = default_config().model_copy(update={"weights_cache_volume": "hostPath"})
    pod = _worker(_render(shape_of("tiny-llama"), config=config))["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["command"] == ["chown", "1000:1000", config.weights_cache_dir]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert pod["volumes"][0]["hostPath"]["path"] == config.weights_cache_dir


# ---- pod sizes (item 5) --------------------------------------------------------------------


def test_workers_fit_the_nodes_of_their_pool(shape_of) -> None:
    limits = _worker(_render(shape_of("tiny-llama"), L4))["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    # one L4 on a 4-core, 15 GiB node: 90% of it, not 8 CPU / 64 GiB
    assert limits == {"cpu": "3", "memory": "13Gi", "nvidia.com/gpu": "1"}
    t4 = NodePool(name="t4", gpu_product="Tesla-T4", gpus_per_node=1, driver_version="550.54.15")
    limits = _worker(_render(shape_of("tiny-llama"), t4))["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    # no node size and no instance shape known: the config's per-GPU figures
    assert limits == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}


def test_chart_settings_reach_every_pod(shape_of) -> None:
    config = default_config().model_copy(
        update={
            "image_pull_secrets": ["regcred"],
            "tolerations": [{"key": "team", "operator": "Equal", "value": "ml"}],
            "head_image": "registry.example/ray-head:1",
        }
    )
    rs = _render(shape_of("tiny-llama"), config=config)
    for pod in _pods(rs):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert {"key": "team", "operator": "Equal", "value": "ml"} in pod["tolerations"]
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "registry.example/ray-head:1"


# ---- one replica per pod, Serve settings, anchors (item 12) ---------------------------------


def test_cpu_pool_runs_one_replica_per_pod_with_all_its_cores(shape_of) -> None:
    rs = _render(shape_of("tiny-llama"), CPU, accelerators=["cpu"])
    options = _deployment(rs)["ray_actor_options"]
    worker = _worker(rs)
    assert options["resources"] == {REPLICA_RESOURCE: 1}
    assert worker["resources"] == {REPLICA_RESOURCE: "1"}
    assert "resources" not in worker["rayStartParams"]  # KubeRay fails to parse it escaped
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert options["num_cpus"] == int(limits["cpu"]) == 7


def test_replica_holds_its_batch_and_one_more(shape_of) -> None:
    rs = _render(shape_of("tiny-llama"))
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    batch = app["args"]["max_batch_size"]
    # the batch, the next one, and the replica's headroom for health checks
    assert (
        _deployment(rs)["max_ongoing_requests"]
        == 2 * batch + app["args"]["ongoing_requests_headroom"]
    )
    assert app["args"]["max_queued_requests"] == batch


def test_rendered_yaml_has_no_anchors(shape_of) -> None:
    rs = _render(shape_of("tiny-llama"))
    text = yaml.safe_dump(rs)
    assert "&id" not in text
    assert "*id" not in text


@pytest.mark.parametrize("model", ["tiny-llama", "llama-3.1-8b"])
def test_serve_config_text_is_what_safe_dump_writes(shape_of, model: str) -> None:
    """The Serve config is emitted with libyaml for speed; its text (and so the spec hash that
    decides whether a RayService is re-applied) must stay byte for byte yaml.safe_dump's."""
    text = _render(shape_of(model), pool=H100)["spec"]["serveConfigV2"]
    assert text == yaml.safe_dump(yaml.safe_load(text), sort_keys=False)


# ---- upgrades (item 7) ---------------------------------------------------------------------


def test_replica_changes_leave_the_ray_cluster_spec_alone(shape_of) -> None:
    shape = shape_of("tiny-llama")
    one = _render(shape, replicas={"min": 1, "max": 1})
    many = _render(shape, replicas={"min": 0, "max": 6, "targetOngoingRequests": 3})
    groups = [r["spec"]["rayClusterConfig"]["workerGroupSpecs"][0] for r in (one, many)]
    assert [(g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in groups] == [
        (1, 0, 1000),
        (1, 0, 1000),
    ]
    assert one["spec"]["rayClusterConfig"] == many["spec"]["rayClusterConfig"]
    warm = _render(shape, replicas={"min": 3, "max": 6})
    assert _worker(warm)["replicas"] == 3  # started with the head, outside both hashes
    assert (
        warm["metadata"]["annotations"][CLUSTER_HASH]
        == one["metadata"]["annotations"][CLUSTER_HASH]
    )
    assert (
        one["metadata"]["annotations"][CLUSTER_HASH]
        == many["metadata"]["annotations"][CLUSTER_HASH]
    )
    assert one["spec"]["serveConfigV2"] != many["spec"]["serveConfigV2"]
    assert one["spec"]["upgradeStrategy"] == {"type": "None"}


def _observe(model: InferenceModel, shape: ModelShape, running: dict[str, Any] | None) -> Observed:
    return Observed(
        model=model,
        generation=2,
        uid="u1",
        pools=[L4],
        shape=shape,
        shape_error=None,
        rayservice=None if running is None else RayServiceView.from_object(running),
    )


def _running(rs: dict[str, Any]) -> dict[str, Any]:
    return {
        **rs,
        "status": {
            "activeServiceStatus": {"rayClusterName": "m-abcde"},
            "pendingServiceStatus": {"rayClusterName": "m-fghij"},
        },
    }


def test_recreate_replaces_the_cluster_only_when_its_pods_change(shape_of) -> None:
    shape = shape_of("tiny-llama")
    config = default_config()
    model = _model(workload={"maxContextTokens": 1024})
    first = decide(_observe(model, shape, None), config, "t")
    assert first.apply is not None
    assert first.replace_clusters == []
    assert first.token_secret is not None
    assert "data" not in first.token_secret
    assert "stringData" not in first.token_secret

    scaled = _model(workload={"maxContextTokens": 1024}, replicas={"min": 0, "max": 4})
    again = decide(_observe(scaled, shape, _running(first.apply)), config, "t")
    assert again.apply is not None  # the Serve config changed...
    assert again.replace_clusters == []  # ...and the cluster stays

    newer = config.model_copy(update={"head_image": "registry.example/ray:2"})
    upgraded = decide(_observe(model, shape, _running(first.apply)), newer, "t")
    assert upgraded.replace_clusters == ["m-abcde", "m-fghij"]
    refused = upgraded.refused("HTTP 403 Forbidden")  # nothing beside a refused RayService
    assert (refused.token_secret, refused.owned, refused.replace_clusters) == (None, [], [])

    blue_green = newer.model_copy(update={"upgrade_strategy": "NewCluster"})
    kuberay = decide(_observe(model, shape, _running(first.apply)), blue_green, "t")
    assert kuberay.apply is not None
    assert kuberay.replace_clusters == []
    assert kuberay.apply["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


# ---- Ray token and NetworkPolicy (issue 15, item 3) ----------------------------------------


def test_ray_token_comes_from_the_models_own_secret(shape_of) -> None:
    rs = _render(shape_of("tiny-llama"))
    auth = rs["spec"]["rayClusterConfig"]["authOptions"]
    secret = build_ray_token_secret(_model(), "u1")
    assert auth == {"mode": "token", "secretName": secret["metadata"]["name"]}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert set(secret) == {"apiVersion", "kind", "metadata", "type"}  # no data rendered
    off = default_config().model_copy(update={"ray_token_auth": False})
    assert (
        "authOptions" not in _render(shape_of("tiny-llama"), config=off)["spec"]["rayClusterConfig"]
    )


def test_network_policy_opens_only_the_serve_port_to_other_pods() -> None:
    config = default_config()
    policy = build_network_policy(_model(), config, "u1")
    assert policy is not None
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"ridgeline.dev/model": "m"}}
    own, serve, dashboard = spec["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": {"ridgeline.dev/model": "m"}}}]}
    assert serve == {"ports": [{"protocol": "TCP", "port": config.serve_port}]}
    assert dashboard["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert dashboard["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}
    }
    off = config.model_copy(
        update={"network_policy": config.network_policy.model_copy(update={"enabled": False})}
    )
    assert build_network_policy(_model(), off, "u1") is None


def test_a_kept_plan_without_the_shape_leaves_the_running_service_alone(shape_of) -> None:
    """After an operator restart with storage unreachable, the cache size would be a guess:
    nothing is re-applied (and so nothing restarts)."""
    shape = shape_of("tiny-llama")
    config = default_config()
    model = _model(workload={"maxContextTokens": 1024})
    first = decide(_observe(model, shape, None), config, "t")
    assert first.apply is not None
    kept = model.model_copy(update={"status": first.status})
    running = _running(first.apply)
    running["metadata"]["annotations"] = {"ridgeline.dev/spec-hash": "from-an-older-operator"}
    obs = _observe(kept, shape, running)
    blind = Observed(**{**obs.__dict__, "shape": None, "shape_error": "storage down"})
    again = decide(blind, config, "t")
    assert again.apply is None
    assert again.replace_clusters == []
    assert decide(obs, config, "t").apply is not None  # with the shape, it is re-applied


@pytest.mark.parametrize("pool", [L4, CPU], ids=["l4-pool", "cpu-pool"])
def test_serve_config_is_valid_for_ray_serve(shape_of, pool: NodePool) -> None:
    """What KubeRay submits to Serve passes Serve's own schema (one replica per pod, the
    deployment's bounded queue)."""
    from ray.serve.schema import ServeDeploySchema

    spec = {"accelerators": ["cpu"]} if pool.is_cpu else {}
    rs = _render(shape_of("tiny-llama"), pool, **spec)
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(rs["spec"]["serveConfigV2"]))
    deployment = parsed.applications[0].deployments[0]
    assert deployment.ray_actor_options.resources == {REPLICA_RESOURCE: 1}
    assert deployment.max_queued_requests >= deployment.max_ongoing_requests


def test_a_network_policy_change_alone_is_applied(shape_of) -> None:
    shape = shape_of("tiny-llama")
    config = default_config()
    model = _model(workload={"maxContextTokens": 1024})
    first = decide(_observe(model, shape, None), config, "t")
    assert first.apply is not None
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    policy = config.network_policy.model_validate(
        {**config.network_policy.model_dump(by_alias=True), "metricsFrom": [scraper]}
    )
    scraped = config.model_copy(update={"network_policy": policy})
    again = decide(_observe(model, shape, _running(first.apply)), scraped, "t")
    assert again.apply is not None
    assert again.apply["spec"] == first.apply["spec"]
    assert again.replace_clusters == []
    [applied] = again.owned
    assert applied["spec"]["ingress"][-1]["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_ray_logs_reach_kubectl_logs(shape_of) -> None:
    """Ray's processes (the replica's download progress and start-up breakdown among them) log
    to the container's stderr, not only to files under /tmp/ray inside the pod."""
    rs = _render(shape_of("tiny-llama"), CPU, accelerators=["cpu"])
    cluster = rs["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = _worker(rs)["template"]["spec"]["containers"][0]
    for container in (head, worker):
        assert {"name": "RAY_LOG_TO_STDERR", "value": "1"} in container["env"]
