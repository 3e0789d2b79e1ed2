"""``hf://org/name@revision``: the Hugging Face Hub's HTTP API (or a mirror at HF_ENDPOINT).

Listing uses ``/api/models/{repo}/tree/{revision}?recursive=true``, which also gives each LFS
file's sha256; reads use ``/{repo}/resolve/{revision}/{path}`` with a Range header. HF_TOKEN,
when set, is sent as a bearer token to the endpoint's own origin only: the Hub answers a read of
an LFS file with a redirect to a CDN on another host, and like ``requests`` and
``huggingface_hub`` the token is dropped on any redirect that changes scheme, host or port.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from ridgeline.storage.base import ObjectInfo, StorageError

DEFAULT_ENDPOINT = "https://huggingface.co"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _OriginBoundAuth(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, minus the credentials when the origin changes.

    urllib copies every header but the body's onto the redirected request, Authorization
    included, whatever the new host; this handler removes it there."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in [h for h in new.headers if h.lower() in ("authorization", "cookie")]:
                del new.headers[name]
        return new


_OPENER = urllib.request.build_opener(_OriginBoundAuth)


class HFStore:
    def __init__(
        self,
        repo: str,
        revision: str | None,
        subdir: str = "",
        *,
        token: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        """``token`` and ``endpoint`` default to HF_TOKEN and HF_ENDPOINT (the operator passes
        a model's own credentials instead of its environment's)."""
        self._repo = repo
        self._revision = revision or "main"
        self._subdir = subdir.strip("/")
        self._token = token
        self._endpoint = (endpoint or os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)).rstrip("/")
        self._listing: dict[str, ObjectInfo] | None = None

    @property
    def root_uri(self) -> str:
        sub = f"/{self._subdir}" if self._subdir else ""
        return f"hf://{self._repo}@{self._revision}{sub}"

    def _request(self, url: str, headers: dict[str, str] | None = None) -> bytes:
        req = urllib.request.Request(url, headers=headers or {})
        token = self._token or os.environ.get("HF_TOKEN")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(req, timeout=60) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            reason = {
                401: "unauthorized: set HF_TOKEN",
                403: "forbidden (gated model?)",
                404: "not found",
            }.get(exc.code, f"HTTP {exc.code}")
            raise StorageError(f"{url}: {reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StorageError(f"{url}: unreachable ({exc})") from exc

    def _path(self, key: str) -> str:
        return f"{self._subdir}/{key}" if self._subdir else key

    def list(self) -> list[ObjectInfo]:
        if self._listing is None:
            rev = urllib.parse.quote(self._revision, safe="")
            sub = f"/{self._subdir}" if self._subdir else ""
            url = f"{self._endpoint}/api/models/{self._repo}/tree/{rev}{sub}?recursive=true"
            try:
                self._listing = _parse_tree(json.loads(self._request(url)), self._subdir)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                raise StorageError(f"{url}: not a Hub file listing ({type(exc).__name__})") from exc
        return sorted(self._listing.values(), key=lambda o: o.key)

    def stat(self, key: str) -> ObjectInfo:
        for info in self.list():
            if info.key == key:
                return info
        raise StorageError(f"{self.root_uri}/{key}: no such file")

    def _url(self, key: str) -> str:
        rev = urllib.parse.quote(self._revision, safe="")
        return f"{self._endpoint}/{self._repo}/resolve/{rev}/{urllib.parse.quote(self._path(key))}"

    def read_range(self, key: str, start: int, length: int, if_version: str | None = None) -> bytes:
        # Reads name the revision, and LFS files are verified by sha256 afterwards.
        if length <= 0:
            return b""
        return self._request(self._url(key), {"Range": f"bytes={start}-{start + length - 1}"})

    def iter_range(
        self, key: str, start: int, length: int, if_version: str | None = None
    ) -> Iterator[bytes]:
        # One ranged request; parts are small enough that streaming inside one buys little.
        yield self.read_range(key, start, length)

    def read(self, key: str) -> bytes:
        return self._request(self._url(key))


def _parse_tree(entries: list[dict[str, Any]], subdir: str) -> dict[str, ObjectInfo]:
    listing = {}
    prefix = f"{subdir}/" if subdir else ""
    for entry in entries:
        if entry.get("type") != "file":
            continue
        lfs = entry.get("lfs") or {}
        key = str(entry["path"])[len(prefix) :]
        # LFS files carry their sha256; "sha256:" tells the downloader it can verify it.
        version = f"sha256:{lfs['oid']}" if lfs.get("oid") else str(entry.get("oid", ""))
        listing[key] = ObjectInfo(key=key, size_bytes=int(entry["size"]), version=version)
    return listing
