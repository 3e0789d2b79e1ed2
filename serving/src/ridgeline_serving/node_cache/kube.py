"""The agent's calls to the API server, each with one request timeout: list InferenceModels, read
its own Node's labels, read a model's credentials Secret (only while it downloads) and write
its report ConfigMap (only when it changed). ``Cluster`` is what the agent needs of it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ridgeline.api import GROUP, PLURAL, VERSION
from ridgeline.api.node_cache import REPORT_KEY
from ridgeline.storage import credentials

log = logging.getLogger("ridgeline.node_cache")

# (connect, read) seconds: the client's default waits forever on a connection that died.
REQUEST_TIMEOUT_S = (10.0, 60.0)


class Cluster(Protocol):
    def list_models(self) -> list[dict[str, Any]]:
        """Every InferenceModel, cluster-wide, as the API server returns it."""
        ...

    def node_labels(self, node: str) -> dict[str, str]: ...

    def read_credentials(self, namespace: str, name: str) -> dict[str, str]:
        """The storage keys of a Secret; CredentialsError naming it (never its values)."""
        ...

    def write_report(self, namespace: str, name: str, labels: Mapping[str, str], text: str) -> bool:
        """Create or update the report ConfigMap unless it already holds ``text``; returns
        whether it wrote."""
        ...


def load_client() -> client.ApiClient:
    """In-cluster configuration (the DaemonSet's service account), else the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class KubeCluster:
    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        # The agent's Node, once read: its report is owned by it, so the garbage collector
        # deletes the report with the node (a removed node's copies stop counting in Cached).
        self._owner: client.V1OwnerReference | None = None

    def list_models(self) -> list[dict[str, Any]]:
        listed: Any = self._custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT_S
        )
        return list(listed.get("items") or [])

    def node_labels(self, node: str) -> dict[str, str]:
        obj: Any = self._core.read_node(node, _request_timeout=REQUEST_TIMEOUT_S)
        self._owner = client.V1OwnerReference(
            api_version="v1", kind="Node", name=node, uid=obj.metadata.uid
        )
        return dict(obj.metadata.labels or {})

    def read_credentials(self, namespace: str, name: str) -> dict[str, str]:
        return credentials.read_credentials(
            self._core, namespace, name, reader="the node cache agent", timeout=REQUEST_TIMEOUT_S
        )

    def write_report(self, namespace: str, name: str, labels: Mapping[str, str], text: str) -> bool:
        owners = [self._owner] if self._owner is not None else None
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=name, namespace=namespace, labels=dict(labels), owner_references=owners
            ),
            data={REPORT_KEY: text},
        )
        try:
            existing: Any = self._core.read_namespaced_config_map(
                name, namespace, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._core.create_namespaced_config_map(
                namespace, body, _request_timeout=REQUEST_TIMEOUT_S
            )
            return True
        same_labels = all((existing.metadata.labels or {}).get(k) == v for k, v in labels.items())
        owner = self._owner
        owned = owner is None or any(
            o.uid == owner.uid for o in existing.metadata.owner_references or []
        )
        if (existing.data or {}).get(REPORT_KEY) == text and same_labels and owned:
            return False
        self._core.patch_namespaced_config_map(
            name, namespace, body, _request_timeout=REQUEST_TIMEOUT_S
        )
        return True
