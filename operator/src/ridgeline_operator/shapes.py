"""Model shapes, read once per model URI and kept for a while: a reconcile every few seconds
must not re-read safetensors headers from object storage."""

from __future__ import annotations

import threading
import time

from ridgeline.shape import ModelShape, ShapeError, read_model_shape
from ridgeline.storage import StorageError

TTL_S = 600.0


class ShapeCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ModelShape]] = {}

    def get(self, uri: str) -> tuple[ModelShape | None, str | None]:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(uri)
            if hit and now - hit[0] < self._ttl:
                return hit[1], None
        try:
            shape = read_model_shape(uri)
        except (ShapeError, StorageError) as exc:
            return None, str(exc)
        with self._lock:
            self._entries[uri] = (now, shape)
        return shape, None
