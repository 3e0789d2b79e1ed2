"""The objects a model owns beside its RayService: the Ray token Secret (created once with a
random token, never read back or logged), the NetworkPolicy (server-side applied), the
RayClusters replaced under upgradeStrategy Recreate (deleted after the RayService is applied),
and an earlier URI's node cache volume and claim (node_cache.py; the current ones are created
on every pass, apply or not: reconcile.py)."""

from __future__ import annotations

import secrets
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ridgeline.controller import Decision
from ridgeline.render.security import TOKEN_KEY
from ridgeline_operator import node_cache
from ridgeline_operator.kube import FIELD_MANAGER, REQUEST_TIMEOUT_S, as_kopf_error

TOKEN_BYTES = 32


def before_apply(api: client.ApiClient, decision: Decision) -> None:
    if decision.token_secret is not None:
        _create_token_secret(api, decision.token_secret)
    for manifest in decision.owned:
        _apply(api, manifest)


def after_apply(api: client.ApiClient, decision: Decision, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    for name in decision.replace_clusters:
        try:
            custom.delete_namespaced_custom_object(
                "ray.io",
                "v1",
                namespace,
                "rayclusters",
                name,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise as_kopf_error(exc, f"delete RayCluster {namespace}/{name}") from exc
    node_cache.prune_volumes(api, decision.node_volumes)  # an earlier URI's


def _create_token_secret(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    body: Any = {**manifest, "stringData": {TOKEN_KEY: secrets.token_urlsafe(TOKEN_BYTES)}}
    try:
        client.CoreV1Api(api).create_namespaced_secret(
            meta["namespace"], body, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as exc:
        if exc.status != 409:  # exists: the token is kept for the model's lifetime
            raise as_kopf_error(exc, f"create Secret {meta['namespace']}/{meta['name']}") from None


def _apply(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    """Server-side apply of a NetworkPolicy (the only kind owned besides the Secret)."""
    meta = manifest["metadata"]
    try:
        client.NetworkingV1Api(api).patch_namespaced_network_policy(
            name=meta["name"],
            namespace=meta["namespace"],
            body=manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as exc:
        what = f"apply {manifest['kind']} {meta['namespace']}/{meta['name']}"
        raise as_kopf_error(exc, what) from exc
