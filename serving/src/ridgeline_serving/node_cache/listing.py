"""A checkpoint's store, listed with the credentials of a model that needs it: several models
with the same URI are tried in turn, the first whose credentials work is used. The values are
held by the returned store only, for the caller's pass (never logged or written)."""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline.storage import ObjectInfo, ObjectStore, open_store, parse_model_uri
from ridgeline.storage.credentials import store_with
from ridgeline_serving.node_cache.decide import ModelRef, Need
from ridgeline_serving.node_cache.kube import Cluster


class ListingError(RuntimeError):
    """No model's credentials could list the store; the message has each model's reason."""


@dataclass(frozen=True)
class Listing:
    store: ObjectStore
    objects: list[ObjectInfo]
    model: ModelRef


def list_checkpoint(need: Need, cluster: Cluster) -> Listing:
    reasons = []
    for ref in need.models:
        try:
            if ref.credentials_secret:
                creds = cluster.read_credentials(ref.namespace, ref.credentials_secret)
                store = store_with(need.uri, creds)
            else:  # a public store, or the node's own identity
                store = open_store(parse_model_uri(need.uri))
            return Listing(store, store.list(), ref)
        except Exception as exc:  # any client's error: the next model's credentials may work
            reasons.append(f"{ref.key}: {exc}")
    raise ListingError("; ".join(reasons) or f"{need.uri}: no model names it")
