"""The agent's decisions, pure: which checkpoints this node needs (from the InferenceModels'
``spec.model.uri``, ``status.weights`` and the node's labels), which versions to evict under
the size budget, and which the grace period frees. The loop (``agent``) gathers the inputs and
acts on the answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ridgeline.api.node_cache_scope import SCHEMES, covers
from ridgeline.storage.download import cache_key

log = logging.getLogger("ridgeline.node_cache")


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model that needs a checkpoint, with what reading its store takes."""

    namespace: str
    name: str
    credentials_secret: str | None = None
    manifest_key: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Need:
    """A checkpoint directory this node should hold, and the models (sorted) that need it."""

    directory: str
    uri: str
    bytes: int
    models: tuple[ModelRef, ...] = field(default_factory=tuple)


def _weights(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    status = obj.get("status")
    weights = status.get("weights") if isinstance(status, Mapping) else None
    return weights if isinstance(weights, Mapping) else None


def needed_checkpoints(
    models: Iterable[Mapping[str, Any]],
    node_labels: Mapping[str, str],
    schemes: tuple[str, ...] = SCHEMES,
) -> dict[str, Need]:
    """The checkpoints the models planned onto this node's pool need, by directory: a model
    counts when it has ``status.weights`` and this node carries every one of its
    ``nodeLabels``. Models with the same URI share one entry (stored once).

    The URI is the spec's, never the status's (anyone who may write the status subresource
    could name any path there), and only of the ``schemes`` the cache covers; a status whose
    ``directory`` is not that URI's (written for an older URI) waits for the operator."""
    found: dict[str, tuple[str, int, list[ModelRef]]] = {}
    for obj in models:
        weights = _weights(obj)
        meta = obj.get("metadata") or {}
        if weights is None or not meta.get("name"):
            continue
        wanted = weights.get("nodeLabels") or {}
        if any(node_labels.get(k) != v for k, v in wanted.items()):
            continue
        source = (obj.get("spec") or {}).get("model") or {}
        uri = str(source.get("uri") or "")
        if not covers(uri, schemes):
            log.warning(
                "%s/%s: the node cache does not cover %r (only %s); skipped",
                meta.get("namespace"),
                meta.get("name"),
                uri,
                ", ".join(f"{s}://" for s in schemes),
            )
            continue
        directory = cache_key(uri)
        if weights.get("directory") != directory:
            # The operator names the directory with the same function; anything else is not
            # a path the agent writes to.
            log.warning(
                "%s/%s: status.weights.directory %r is not %r (cache_key of its URI); skipped",
                meta.get("namespace"),
                meta.get("name"),
                weights.get("directory"),
                directory,
            )
            continue
        ref = ModelRef(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta["name"]),
            credentials_secret=source.get("credentialsSecret"),
            manifest_key=source.get("sha256Manifest"),
        )
        size = int(weights.get("bytes") or 0)
        _, known, refs = found.setdefault(directory, (uri, size, []))
        refs.append(ref)
        found[directory] = (uri, max(known, size), refs)
    return {
        d: Need(directory=d, uri=uri, bytes=size, models=tuple(sorted(refs)))
        for d, (uri, size, refs) in sorted(found.items())
    }


@dataclass(frozen=True)
class Version:
    """One version of a checkpoint on this node, as the agent found it."""

    directory: str
    digest: str
    bytes: int  # on disk
    last_used: float  # when a model last needed it or a replica last held it (epoch seconds)
    in_use: bool  # a replica holds its .inuse lock


def evictable(versions: Iterable[Version], keep: set[tuple[str, str]]) -> list[Version]:
    """The versions that may go, least recently used first: not in ``keep`` (the current and
    the target version of every needed checkpoint) and not held by a replica."""
    free = [v for v in versions if (v.directory, v.digest) not in keep and not v.in_use]
    return sorted(free, key=lambda v: (v.last_used, v.directory, v.digest))


@dataclass(frozen=True)
class Eviction:
    """What to evict before a fill of ``needed`` bytes; ``enough`` False: even evicting every
    evictable version leaves too little room, so nothing is evicted and the fill waits."""

    evict: list[Version]
    enough: bool
    used: int
    needed: int
    budget: int


def plan_eviction(
    versions: list[Version], keep: set[tuple[str, str]], needed: int, budget: int
) -> Eviction:
    """The least recently used evictable versions whose removal makes ``used + needed`` fit in
    ``budget`` (0: no budget, nothing to evict)."""
    used = sum(v.bytes for v in versions)
    excess = used + needed - budget
    if budget <= 0 or excess <= 0:
        return Eviction([], True, used, needed, budget)
    chosen: list[Version] = []
    freed = 0
    for version in evictable(versions, keep):
        if freed >= excess:
            break
        chosen.append(version)
        freed += version.bytes
    if freed < excess:
        return Eviction([], False, used, needed, budget)
    return Eviction(chosen, True, used, needed, budget)


def expired(
    versions: Iterable[Version], keep: set[tuple[str, str]], now: float, grace_s: float
) -> list[Version]:
    """The evictable versions unneeded for at least the grace period: deleted each pass."""
    return [v for v in evictable(versions, keep) if now - v.last_used >= grace_s]
