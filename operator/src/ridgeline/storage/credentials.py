"""A model's own credentials (``spec.model.credentialsSecret``) as the storage clients use them:
the Secret read (by the operator's shape reader and the node cache agent, each with its own API
client) and its data decoded into the keys below, and a store authenticated with them instead
of the process environment. Both callers hold the values only for the read or download, never
logging or copying them."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Protocol

from ridgeline.storage.base import ObjectStore
from ridgeline.storage.uri import open_store, parse_model_uri

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


def decode_secret_data(namespace: str, name: str, data: Mapping[str, str]) -> dict[str, str]:
    """The ``KEYS`` present in a Secret's (base64) ``data``, decoded; CredentialsError when a
    value is not UTF-8 text or none of the keys is there."""
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


class SecretReader(Protocol):
    """What ``read_credentials`` needs of a Kubernetes ``CoreV1Api``."""

    def read_namespaced_secret(
        self, name: str, namespace: str, *, _request_timeout: tuple[float, float]
    ) -> Any: ...


def read_credentials(
    core: SecretReader,
    namespace: str,
    name: str,
    *,
    reader: str,
    timeout: tuple[float, float],
) -> dict[str, str]:
    """The ``KEYS`` of the Secret, read with ``core``; CredentialsError naming it (and, when
    RBAC refuses, ``reader``: who may not read it) but never its values."""
    # Imported here: the storage extra alone (the CLI's shape reader) has no Kubernetes client.
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core.read_namespaced_secret(name, namespace, _request_timeout=timeout)
    except ApiException as exc:
        why = {
            404: "not found",
            403: f"{reader} may not read it (RBAC: secrets get)",
        }.get(exc.status or 0, f"HTTP {exc.status} {exc.reason}")
        raise CredentialsError(f"credentialsSecret {namespace}/{name}: {why}") from None
    return decode_secret_data(namespace, name, secret.data or {})


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
