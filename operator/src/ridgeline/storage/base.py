"""The object-store interface: list, stat, ranged reads. Nothing here touches the network."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

CHUNK_BYTES = 4 * 2**20


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

    def read_range(self, key: str, start: int, length: int, if_version: str | None = None) -> bytes:
        """Exactly ``length`` bytes from ``start``, or fewer only at the end of the object.
        With ``if_version``, fail rather than mix bytes of an object that changed meanwhile."""
        ...

    def read(self, key: str) -> bytes:
        """The whole object (for small files such as config.json)."""
        ...

    def iter_range(
        self, key: str, start: int, length: int, if_version: str | None = None
    ) -> Iterator[bytes]:
        """The same bytes as ``read_range``, in chunks as they arrive (downloads stream them to
        disk instead of holding a part in memory)."""
        ...
