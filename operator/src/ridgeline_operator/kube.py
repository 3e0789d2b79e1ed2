"""The operator's own calls to the API server: server-side apply of RayServices with one field
manager, status writes from each model's daemon (conditional on resourceVersion), and one list
of GPU nodes at start-up. Everything else is read from kopf's watches; Events go through kopf."""

from __future__ import annotations

import json
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "ridgeline-operator"


# Reconciles run in kopf's and asyncio's thread pools at once: one connection each.
CONNECTIONS = 32
# (connect, read) seconds for every call the operator makes itself. The client's default is
# to wait forever: a request on a connection that died silently (a NAT or proxy dropping it)
# would hold its model's wake-up daemon, and with it every later wake and resync, for good.
REQUEST_TIMEOUT_S = (10.0, 60.0)


def load_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTIONS
    return client.ApiClient(configuration)


def apply_rayservice(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    """Server-side apply; conflicts and transient API errors are retried by kopf, not fatal."""
    meta = manifest["metadata"]
    try:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            group="ray.io",
            version="v1",
            plural="rayservices",
            namespace=meta["namespace"],
            name=meta["name"],
            body=manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            # Unknown fields are an error, not silently pruned: KubeRay's schema decides.
            field_validation="Strict",
            _content_type="application/apply-patch+yaml",
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as exc:
        raise as_kopf_error(exc, f"apply RayService {meta['namespace']}/{meta['name']}") from exc


def as_kopf_error(exc: ApiException, what: str) -> Exception:
    status = exc.status or 0
    if status in (409, 404, 429) or status >= 500 or status == 0:
        # 409: another writer; 404: the CRD or namespace is not there yet; 429/5xx: load.
        delay = {409: 1, 429: 5}.get(status, 10)
        return kopf.TemporaryError(f"{what}: HTTP {status} {exc.reason}; retrying", delay=delay)
    return kopf.PermanentError(f"{what}: HTTP {status} {exc.reason}: {exc.body}")


class ConflictError(Exception):
    """The object changed since the status was computed from it (HTTP 409)."""


def patch_status(
    api: client.ApiClient,
    group: str,
    version: str,
    plural: str,
    namespace: str,
    name: str,
    resource_version: str,
    status: dict[str, Any],
) -> str | None:
    """Merge-patch the status subresource, only if the object is still at ``resource_version``:
    a status computed from an object that has changed since is stale (ConflictError). Returns
    the object's resourceVersion after the write: the same one where the server found nothing
    to change (a field the CRD's schema prunes, say), which then makes no new version."""
    try:
        written: Any = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            group=group,
            version=version,
            plural=plural,
            namespace=namespace,
            name=name,
            body={"metadata": {"resourceVersion": resource_version}, "status": status},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as exc:
        if exc.status == 409:
            raise ConflictError(f"{namespace}/{name} changed since {resource_version}") from exc
        raise as_kopf_error(exc, f"write status of {namespace}/{name}") from exc
    after = (written.get("metadata") or {}).get("resourceVersion") if written else None
    return str(after) if after else None


def list_nodes(api: client.ApiClient, label_selector: str) -> list[dict[str, Any]]:
    """One list at start-up, so that the first reconciles see the pools (as API dicts). Read
    as JSON, not through the client's model objects and back: for a thousand nodes that
    transient was twice the memory (23 MiB against 11 MiB), at the operator's busiest moment."""
    # Typed as the model list; with _preload_content=False it is the raw HTTP response.
    response: Any = client.CoreV1Api(api).list_node(
        label_selector=label_selector,
        _request_timeout=REQUEST_TIMEOUT_S,
        _preload_content=False,
    )
    try:
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
    finally:
        response.release_conn()
    return items
