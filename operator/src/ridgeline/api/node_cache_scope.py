"""Which models the node weight cache covers (issue 24): those read from an object store,
``s3://``, ``gs://`` and ``hf://``. A ``file://`` model (or a plain path) is read where it is;
caching it would only let whoever writes a model's URI have the agent, root on the node, copy
a path of its own container onto the node's disk. The operator writes no ``status.weights``
for other schemes, and the agent refuses them whatever a status says."""

from __future__ import annotations

SCHEMES = ("s3", "gs", "hf")


def covers(uri: str, schemes: tuple[str, ...] = SCHEMES) -> bool:
    """Whether ``uri``'s scheme is one of ``schemes`` (a plain path has none)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() in schemes
