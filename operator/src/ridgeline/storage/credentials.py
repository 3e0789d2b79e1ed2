"""A model's own credentials (``spec.model.credentialsSecret``) as the storage clients use them:
the Secret's data decoded into the keys below, and a store authenticated with them instead of
the process environment. The API call that reads the Secret is each caller's (the operator's
shape reader, the node cache agent); both hold the values only for the read or download, never
logging or copying them."""

from __future__ import annotations

import base64
from collections.abc import Mapping

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
