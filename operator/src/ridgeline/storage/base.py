"""The object-store interface: list, stat, ranged reads. Nothing here touches the network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StorageError(RuntimeError):
    """A read that failed; the message names the URI and the cause."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size_bytes: int
    # ETag, or for local files size+mtime: changes whenever the content may have changed.
    version: str


class ObjectStore(Protocol):
    """Read-only access to the files under one model root."""

    @property
    def root_uri(self) -> str: ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and version of one object; StorageError if it is missing."""
        ...

    def list(self) -> list[ObjectInfo]:
        """Every object under the root, keys relative to it."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``start``, or fewer only at the end of the object."""
        ...

    def read(self, key: str) -> bytes:
        """The whole object (for small files such as config.json)."""
        ...
