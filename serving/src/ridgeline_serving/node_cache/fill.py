"""One version to fill and its download: ``download_into`` in a thread of its own, so that the
agent's thread samples progress into the report meanwhile and can stop without waiting for it
(the downloader records its parts: the next start resumes)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ridgeline.storage import ObjectInfo, ObjectStore
from ridgeline.storage.download import DownloadStats, download_into
from ridgeline_serving.node_cache.decide import Need


@dataclass(frozen=True)
class Fill:
    """A version to fill this pass, from the listing it was named after."""

    need: Need
    store: ObjectStore
    objects: list[ObjectInfo]
    manifest_key: str | None
    digest: str
    total: int
    files: list[ObjectInfo]


class Download:
    def __init__(self, fill: Fill, version: Path, parallel: int) -> None:
        self.stats: DownloadStats | None = None
        self.error: Exception | None = None
        self._fill, self._version, self._parallel = fill, version, parallel
        self.thread = threading.Thread(target=self._work, name=f"fill {fill.digest}", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            self.stats = download_into(
                self._fill.store,
                self._version,
                objects=self._fill.objects,
                manifest_key=self._fill.manifest_key,
                parallel=self._parallel,
                progress=False,
            )
        except Exception as exc:  # reported as the checkpoint's failure
            self.error = exc

    def wait(self, seconds: float) -> bool:
        """Whether it ended within ``seconds``."""
        self.thread.join(seconds)
        return not self.thread.is_alive()
