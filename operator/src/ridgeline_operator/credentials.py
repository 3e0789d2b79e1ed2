"""A model's own credentials for reading its shape: the keys of ``spec.model.credentialsSecret``
that the storage clients use, read from the API server when needed and held only for the read
(never cached, logged or copied into another object)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ridgeline.storage import ObjectStore, open_store, parse_model_uri
from ridgeline_operator.kube import REQUEST_TIMEOUT_S

# The keys the serving pods read from the same Secret (as environment variables).
KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "GCS_ENDPOINT_URL",
    "HF_TOKEN",
    "HF_ENDPOINT",
)


class CredentialsError(RuntimeError):
    """The Secret cannot be used; the message names it and says why (never its values)."""


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
    data: Mapping[str, str] = secret.data or {}
    out = {}
    for key in KEYS:
        if key in data:
            try:
                out[key] = base64.b64decode(data[key]).decode().strip()
            except (ValueError, UnicodeDecodeError):
                raise CredentialsError(
                    f"credentialsSecret {namespace}/{name}: key {key} is not UTF-8 text"
                ) from None
    if not out:
        raise CredentialsError(
            f"credentialsSecret {namespace}/{name} has none of the keys {', '.join(KEYS)}"
        )
    return out


def store_with(uri: str, creds: Mapping[str, str]) -> ObjectStore:
    """The store for ``uri``, authenticated with ``creds`` instead of the process environment."""
    parsed = parse_model_uri(uri)
    if parsed.scheme in ("s3", "gs"):
        from ridgeline.storage.s3 import S3Store, s3_client

        return S3Store(
            parsed.scheme, parsed.authority, parsed.path, client=s3_client(parsed.scheme, creds)
        )
    if parsed.scheme == "hf":
        from ridgeline.storage.hf import HFStore

        return HFStore(
            parsed.authority,
            parsed.revision,
            parsed.path,
            token=creds.get("HF_TOKEN"),
            endpoint=creds.get("HF_ENDPOINT"),
        )
    return open_store(parsed)
