"""What keeps a model's Ray cluster to itself: Ray's token authentication, from a Secret the
operator creates once per model, and a NetworkPolicy that opens only the serve port to other
pods. The token never passes through here: the operator's Kubernetes layer generates it when it
creates the Secret, and pods read it from the Secret."""

from __future__ import annotations

from typing import Any

from ridgeline.api.inference_model import InferenceModel
from ridgeline.platform_config import PeerSelector, PlatformConfig
from ridgeline.render.meta import MODEL_LABEL, object_meta

# KubeRay's key for the token in authOptions.secretName (utils.RAY_AUTH_TOKEN_SECRET_KEY).
TOKEN_KEY = "auth_token"
DASHBOARD_PORT = 8265
METRICS_PORT = 8080


def ray_token_secret_name(model: InferenceModel) -> str:
    return f"{model.metadata.name}-ray-token"


def build_ray_token_secret(model: InferenceModel, uid: str | None) -> dict[str, Any]:
    """The Secret without its data (added at creation, never rendered or logged)."""
    metadata = object_meta(model, ray_token_secret_name(model), uid)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


def auth_options(model: InferenceModel, config: PlatformConfig) -> dict[str, Any] | None:
    if not config.ray_token_auth:
        return None
    return {"mode": "token", "secretName": ray_token_secret_name(model)}


def _peer(selector: PeerSelector) -> dict[str, Any]:
    return {
        "namespaceSelector": dict(selector.namespace_selector),
        "podSelector": dict(selector.pod_selector),
    }


def build_network_policy(
    model: InferenceModel, config: PlatformConfig, uid: str | None
) -> dict[str, Any] | None:
    """Ingress to the model's pods: anything between its own pods (Ray's GCS, object manager,
    workers); the serve port from anywhere; the dashboard from the KubeRay operator; metrics
    from the configured scrapers. Egress stays open (weights come from object storage)."""
    policy = config.network_policy
    if not policy.enabled:
        return None
    own = {"podSelector": {"matchLabels": {MODEL_LABEL: model.metadata.name}}}
    ingress: list[dict[str, Any]] = [
        {"from": [own]},
        {"ports": [{"protocol": "TCP", "port": config.serve_port}]},
        {
            "from": [_peer(policy.kuberay_operator)],
            "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}],
        },
    ]
    if policy.metrics_from:
        ingress.append(
            {
                "from": [_peer(p) for p in policy.metrics_from],
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(model, f"{model.metadata.name}-ray", uid),
        "spec": {
            "podSelector": dict(own["podSelector"]),
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
