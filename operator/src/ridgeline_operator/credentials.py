"""A model's own credentials for reading its shape: the keys of ``spec.model.credentialsSecret``
that the storage clients use, read from the API server when needed and held only for the read
(never cached, logged or copied into another object)."""

from __future__ import annotations

from kubernetes import client

# The Secret's read and decoding live in the core, which the node cache agent shares.
from ridgeline.storage import credentials
from ridgeline.storage.credentials import KEYS, CredentialsError, store_with
from ridgeline_operator.kube import REQUEST_TIMEOUT_S

__all__ = ["KEYS", "CredentialsError", "read_credentials", "store_with"]


def read_credentials(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return credentials.read_credentials(
        client.CoreV1Api(api), namespace, name, reader="the operator", timeout=REQUEST_TIMEOUT_S
    )
