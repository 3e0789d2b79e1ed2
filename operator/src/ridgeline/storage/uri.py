"""Model URIs: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hf://org/name@revision``,
``file:///abs/path`` and plain paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ridgeline.storage.base import ObjectStore, StorageError

SCHEMES = ("s3", "gs", "hf", "file")


@dataclass(frozen=True)
class ModelURI:
    scheme: str
    # bucket for s3/gs, "org/name" for hf, empty for file
    authority: str
    # prefix inside the bucket, or the local path
    path: str
    revision: str | None = None

    def __str__(self) -> str:
        if self.scheme == "file":
            return Path(self.path).as_uri()
        rev = f"@{self.revision}" if self.revision else ""
        sep = "/" if self.path else ""
        return f"{self.scheme}://{self.authority}{rev}{sep}{self.path}"


def parse_model_uri(uri: str) -> ModelURI:
    if "://" not in uri:
        try:
            path = Path(uri).expanduser().resolve()
        except (RuntimeError, OSError) as exc:  # 3.11: RuntimeError for a loop of links
            raise StorageError(f"{uri}: cannot resolve the path: {exc}") from exc
        return ModelURI(scheme="file", authority="", path=str(path))
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise StorageError(f"{uri}: unsupported scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file URIs name a local path (file:///abs/path)")
        return ModelURI(scheme="file", authority="", path=unquote(parsed.path))
    if not parsed.netloc:
        raise StorageError(f"{uri}: missing bucket or repository name")
    if scheme == "hf":
        # hf://org/name@revision[/subdir]
        parts = (parsed.netloc + parsed.path).split("/")
        if len(parts) < 2 or not parts[1]:
            raise StorageError(f"{uri}: hf URIs are hf://org/name[@revision]")
        name, _, revision = parts[1].partition("@")
        return ModelURI(
            scheme="hf",
            authority=f"{parts[0]}/{name}",
            path="/".join(p for p in parts[2:] if p),
            revision=revision or None,
        )
    return ModelURI(scheme=scheme, authority=parsed.netloc, path=parsed.path.strip("/"))


def open_store(uri: str | ModelURI) -> ObjectStore:
    """The store for a model root (imports its client library only when used)."""
    model_uri = uri if isinstance(uri, ModelURI) else parse_model_uri(uri)
    if model_uri.scheme == "file":
        from ridgeline.storage.local import LocalStore

        return LocalStore(Path(model_uri.path))
    if model_uri.scheme in ("s3", "gs"):
        from ridgeline.storage.s3 import S3Store

        return S3Store(model_uri.scheme, model_uri.authority, model_uri.path)
    from ridgeline.storage.hf import HFStore

    return HFStore(model_uri.authority, model_uri.revision, model_uri.path)
