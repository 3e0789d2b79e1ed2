"""A checkpoint's store, listed with the credentials of a model that needs it: several models
with the same URI are tried in turn, the first whose credentials work is used. The values are
held by the returned store only, for the caller's pass (never logged or written)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ridgeline.storage import ObjectInfo, ObjectStore, open_store, parse_model_uri
from ridgeline.storage.credentials import CredentialsError, store_with
from ridgeline_serving.node_cache.decide import ModelRef, Need
from ridgeline_serving.node_cache.kube import Cluster

log = logging.getLogger("ridgeline.node_cache")


class ListingError(RuntimeError):
    """No model's credentials could list the store. The message lands in the Cached condition
    of every model with the URI, other tenants' too: it names no model and no Secret (the
    agent's log has each model's own reason)."""


@dataclass(frozen=True)
class Listing:
    store: ObjectStore
    objects: list[ObjectInfo]
    model: ModelRef


def _unnamed(exc: Exception, ref: ModelRef) -> str:
    """The error without the Secret's name (CredentialsError starts with it)."""
    text = str(exc)
    if isinstance(exc, CredentialsError):
        text = text.replace(
            f"credentialsSecret {ref.namespace}/{ref.credentials_secret}",
            "a model's credentialsSecret",
        )
    return text


def list_checkpoint(need: Need, cluster: Cluster) -> Listing:
    last = ""
    for ref in need.models:
        try:
            if ref.credentials_secret:
                creds = cluster.read_credentials(ref.namespace, ref.credentials_secret)
                store = store_with(need.uri, creds)
            else:  # a public store, or the node's own identity
                store = open_store(parse_model_uri(need.uri))
            return Listing(store, store.list(), ref)
        except Exception as exc:  # any client's error: the next model's credentials may work
            log.warning("%s: listing with the credentials of %s failed: %s", need.uri, ref.key, exc)
            last = _unnamed(exc, ref)
    if not need.models:
        raise ListingError(f"{need.uri}: no model names it")
    if len(need.models) == 1:
        raise ListingError(f"the model's credentials could not list it: {last}")
    raise ListingError(
        f"none of the {len(need.models)} models' credentials could list it; the last error: {last}"
    )
