"""A model's own credentials for reading its shape: the keys of ``spec.model.credentialsSecret``
that the storage clients use, read from the API server when needed and held only for the read
(never cached, logged or copied into another object)."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

# The pure half lives in the core, which the node cache agent shares; re-exported here.
from ridgeline.storage.credentials import (
    KEYS,
    CredentialsError,
    decode_secret_data,
    store_with,
)
from ridgeline_operator.kube import REQUEST_TIMEOUT_S

__all__ = ["KEYS", "CredentialsError", "read_credentials", "store_with"]


def read_credentials(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    try:
        secret: Any = client.CoreV1Api(api).read_namespaced_secret(
            name, namespace, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as exc:
        why = {
            404: "not found",
            403: "the operator may not read it (RBAC: secrets get)",
        }.get(exc.status or 0, f"HTTP {exc.status} {exc.reason}")
        raise CredentialsError(f"credentialsSecret {namespace}/{name}: {why}") from None
    return decode_secret_data(namespace, name, secret.data or {})
