"""Model shapes, read once per model and kept for a while: a reconcile every few seconds must
not re-read safetensors headers from object storage.

A model with ``credentialsSecret`` is read with that Secret's credentials (read from the API
server at each read, never kept); one without, with the operator's own environment (the chart
gives it none). Any failure becomes a message for ``Planned=False ModelUnreadable``, remembered
briefly so that a broken model is not re-read at every resync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ridgeline.shape import ModelShape
from ridgeline.shape.reader import ShapeError, read_model_shape
from ridgeline.storage import StorageError
from ridgeline_operator.credentials import CredentialsError, store_with

TTL_S = 600.0
FAILURE_TTL_S = 30.0
log = logging.getLogger(__name__)

# (namespace, secret name) -> the Secret's storage credentials
CredentialsReader = Callable[[str, str], dict[str, str]]
Key = tuple[str, str | None, str]


class ShapeCache:
    def __init__(
        self,
        credentials: CredentialsReader | None = None,
        ttl_s: float = TTL_S,
        failure_ttl_s: float = FAILURE_TTL_S,
    ) -> None:
        self._credentials = credentials
        self._ttl = ttl_s
        self._failure_ttl = failure_ttl_s
        self._lock = threading.Lock()
        self._entries: dict[Key, tuple[float, ModelShape | None, str | None]] = {}

    def get(
        self, uri: str, namespace: str = "", credentials_secret: str | None = None
    ) -> tuple[ModelShape | None, str | None]:
        # Keyed by who reads it too: one namespace's credentials never size another's model.
        key: Key = (namespace, credentials_secret, uri)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            at, shape, error = hit
            if now - at < (self._ttl if shape is not None else self._failure_ttl):
                return shape, error
        shape, error = self._read(uri, namespace, credentials_secret)
        if shape is None and hit is not None and hit[1] is not None:
            # A model that was readable stays planned on its last shape while storage or its
            # Secret is briefly unavailable: a running service is never churned by a blip.
            log.warning("re-reading %s failed, keeping its last shape: %s", uri, error)
            shape, error = hit[1], None
        with self._lock:
            self._entries[key] = (now, shape, error)
        return shape, error

    def _read(
        self, uri: str, namespace: str, credentials_secret: str | None
    ) -> tuple[ModelShape | None, str | None]:
        try:
            if credentials_secret:
                if self._credentials is None:
                    raise RuntimeError("no way to read credentials secrets configured")
                store = store_with(uri, self._credentials(namespace, credentials_secret))
                return read_model_shape(store), None
            return read_model_shape(uri), None
        except (ShapeError, StorageError, CredentialsError) as exc:
            return None, str(exc)
        except Exception as exc:  # a failure nobody foresaw is reported too, not retried hot
            log.exception("reading the shape of %s failed unexpectedly", uri)
            return None, f"{type(exc).__name__}: {exc}"
