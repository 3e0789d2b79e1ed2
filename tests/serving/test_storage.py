"""The one storage layer against a real S3 server (MinIO) and a local Hub-style HTTP server:
listing, ranged reads, the shape reader over s3://, the node-local cache, integrity, resume."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from ridgeline.shape.reader import ShapeError, read_model_shape
from ridgeline.storage import StorageError, open_store
from ridgeline.storage.download import IntegrityError, download_model
from ridgeline.storage.hf import HFStore


def test_s3_list_stat_and_ranged_read(tiny_uri: str, tiny_dir: Path) -> None:
    store = open_store(tiny_uri)
    keys = {o.key for o in store.list()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= keys
    local = (tiny_dir / "model.safetensors").read_bytes()
    info = store.stat("model.safetensors")
    assert info.size_bytes == len(local)
    assert store.read_range("model.safetensors", 100, 50) == local[100:150]
    assert info.version == hashlib.md5(local).hexdigest()  # single-part ETag


def test_shape_reader_over_s3_reads_only_headers(tiny_uri: str, tiny_dir: Path) -> None:
    assert read_model_shape(tiny_uri) == read_model_shape(str(tiny_dir))


def test_missing_object_and_bucket_are_named(s3, tiny_uri: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StorageError, match=r"s3://models/tiny-chat/nope: no such object"):
        open_store(tiny_uri).stat("nope")
    with pytest.raises(ShapeError, match=r"s3://no-such-bucket/x/config.json"):
        read_model_shape("s3://no-such-bucket/x")


def test_unreachable_store_names_the_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(
        StorageError, match=r"s3://models/tiny-chat: cannot list: .*(Connect|connect)"
    ):
        download_model(open_store("s3://models/tiny-chat"), tmp_path)
    assert not any(tmp_path.rglob("*.safetensors"))


def test_download_in_parallel_ranged_parts_then_reuse(
    tiny_uri: str, tiny_dir: Path, tmp_path: Path
) -> None:
    store = open_store(tiny_uri)
    first = download_model(store, tmp_path, part_bytes=64 * 1024, parallel=4, progress=False)
    assert not first.reused
    assert first.bytes_downloaded == first.bytes_total > 0
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first.path / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert not list(first.path.rglob("*.partial*"))
    second = download_model(store, tmp_path, part_bytes=64 * 1024, progress=False)
    assert second.reused
    assert second.bytes_downloaded == 0


def test_manifest_mismatch_fails_loudly_and_leaves_no_corrupt_cache(
    s3_client, tiny_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    weights = (tiny_dir / "model.safetensors").read_bytes()
    s3_client.put_object(
        Bucket="models", Key="corrupt/config.json", Body=(tiny_dir / "config.json").read_bytes()
    )
    good = hashlib.sha256(weights).hexdigest()
    s3_client.put_object(
        Bucket="models", Key="corrupt/SHA256SUMS", Body=f"{good}  model.safetensors\n".encode()
    )
    corrupted = bytearray(weights)
    corrupted[len(corrupted) // 2] ^= 0xFF
    s3_client.put_object(Bucket="models", Key="corrupt/model.safetensors", Body=bytes(corrupted))
    store = open_store("s3://models/corrupt")
    with pytest.raises(
        IntegrityError,
        match=rf"s3://models/corrupt/model.safetensors: sha256 mismatch: expected {good}",
    ):
        download_model(store, tmp_path, manifest_key="SHA256SUMS", progress=False)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert not [p for p in files if "safetensors" in p.name], files
    assert not list(tmp_path.rglob(".ridgeline-complete.json"))


class _FlakyStore:
    """Wraps a store; fails every read after ``budget`` ranged reads (an interrupted pod)."""

    def __init__(self, inner, budget: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.budget, self.reads = inner, budget, 0
        self.root_uri = inner.root_uri

    def stat(self, key):  # type: ignore[no-untyped-def]
        return self.inner.stat(key)

    def list(self):  # type: ignore[no-untyped-def]
        return self.inner.list()

    def read(self, key):  # type: ignore[no-untyped-def]
        return self.inner.read(key)

    def iter_range(self, key, start, length, if_version=None):  # type: ignore[no-untyped-def]
        self.reads += 1
        if self.reads > self.budget:
            raise StorageError(f"{self.root_uri}/{key}: connection reset")
        return self.inner.iter_range(key, start, length, if_version)


def test_interrupted_download_resumes_from_written_parts(
    tiny_uri: str, tiny_dir: Path, tmp_path: Path
) -> None:
    store = open_store(tiny_uri)
    part = 16 * 1024
    total_parts = sum(-(-o.size_bytes // part) or 1 for o in store.list())
    flaky = _FlakyStore(store, budget=total_parts // 2)
    with pytest.raises(StorageError, match="connection reset"):
        download_model(flaky, tmp_path, part_bytes=part, parallel=1, progress=False)  # type: ignore[arg-type]
    counting = _FlakyStore(store, budget=10**9)
    stats = download_model(counting, tmp_path, part_bytes=part, parallel=1, progress=False)  # type: ignore[arg-type]
    assert counting.reads <= total_parts - total_parts // 2 + 2
    assert (stats.path / "model.safetensors").read_bytes() == (
        tiny_dir / "model.safetensors"
    ).read_bytes()


class _HubHandler(http.server.BaseHTTPRequestHandler):
    root: Path

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # the two Hub routes the HF store uses
        if self.path.startswith("/api/models/org/tiny/tree/main"):
            entries = []
            for p in sorted(self.root.rglob("*")):
                if p.is_file():
                    data = p.read_bytes()
                    entry = {
                        "type": "file",
                        "path": p.relative_to(self.root).as_posix(),
                        "size": len(data),
                        "oid": "x",
                    }
                    if p.suffix == ".safetensors":
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
                    entries.append(entry)
            body = json.dumps(entries).encode()
            self.send_response(200)
        elif self.path.startswith("/org/tiny/resolve/main/"):
            target = self.root / self.path.removeprefix("/org/tiny/resolve/main/")
            if not target.is_file():
                self.send_error(404)
                return
            body = target.read_bytes()
            rng = self.headers.get("Range")
            if rng:
                start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
                body = body[start : end + 1]
                self.send_response(206)
            else:
                self.send_response(200)
        else:
            self.send_error(404)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_hf_store_lists_reads_ranges_and_verifies_lfs_sha256(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _HubHandler.root = tiny_dir
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        store = open_store("hf://org/tiny@main")
        assert isinstance(store, HFStore)
        assert store.stat("model.safetensors").version.startswith("sha256:")
        assert read_model_shape(store) == read_model_shape(str(tiny_dir))
        stats = download_model(store, tmp_path, part_bytes=32 * 1024, progress=False)
        assert (stats.path / "model.safetensors").read_bytes() == (
            tiny_dir / "model.safetensors"
        ).read_bytes()
        with pytest.raises(StorageError, match="not found"):
            open_store("hf://org/missing@main").list()
    finally:
        server.shutdown()


def test_object_replaced_mid_download_is_refused_not_mixed(
    s3_client, tiny_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    s3_client.put_object(
        Bucket="models", Key="moving/config.json", Body=(tiny_dir / "config.json").read_bytes()
    )
    s3_client.put_object(Bucket="models", Key="moving/model.safetensors", Body=b"a" * 100_000)
    store = open_store("s3://models/moving")
    stale = store.list()  # what the downloader saw when it started

    class Stale(_FlakyStore):
        def list(self):  # type: ignore[no-untyped-def]
            return stale

    s3_client.put_object(Bucket="models", Key="moving/model.safetensors", Body=b"b" * 100_000)
    with pytest.raises(StorageError, match="object changed during the download"):
        download_model(Stale(store, budget=10**9), tmp_path, part_bytes=16 * 1024, progress=False)  # type: ignore[arg-type]
    assert not list(tmp_path.rglob("model.safetensors"))
