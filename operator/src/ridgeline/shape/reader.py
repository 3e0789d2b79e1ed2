"""Read a model's shape from its root: config.json plus every safetensors header, fetched with
ranged reads so that no tensor data crosses the network.

Errors: every failure caused by the model root (unreachable store, missing or malformed file,
implausible architecture, a checkpoint with no tensors) raises ``ShapeError`` and nothing else,
with a one-line message that names the file. Callers need one except clause."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ridgeline.shape.config_json import ConfigError, architecture_fields
from ridgeline.shape.model_shape import ModelShape
from ridgeline.shape.safetensors_header import (
    PREFIX_BYTES,
    HeaderError,
    TensorInfo,
    header_length,
    parse_header,
)
from ridgeline.storage import ObjectStore, StorageError, open_store

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# One request usually covers a whole header (a 7B shard's is ~20-40 KiB).
FIRST_READ_BYTES = 64 * 1024


class ShapeError(ValueError):
    """A model root that cannot be sized; the message, one line, names the file and the
    problem."""

    def __init__(self, message: str) -> None:
        # Causes quoted from storage clients or parsers may span lines; a condition message and
        # a CLI error are one line.
        super().__init__(" ".join(message.split()))


def read_model_shape(uri_or_store: str | ObjectStore) -> ModelShape:
    """The model's shape; raises ShapeError (only) for anything wrong with the model root."""
    try:
        store = open_store(uri_or_store) if isinstance(uri_or_store, str) else uri_or_store
    except StorageError as exc:
        raise ShapeError(str(exc)) from exc
    config = _read_json(store, CONFIG)
    try:
        arch = architecture_fields(config)
    except ConfigError as exc:
        raise ShapeError(f"{_where(store, CONFIG)}: {exc}") from exc
    files = _weight_files(store)
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        per_file = list(pool.map(lambda key: _read_header(store, key), files))
    tensors = [t for file_tensors in per_file for t in file_tensors]
    if not any(t.numel for t in tensors):
        # Planning "0.0M parameters" would size nothing; an empty header is a broken checkpoint.
        named = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise ShapeError(f"{store.root_uri}: the safetensors headers ({named}) list no tensors")
    expected = _index_map(store)
    if expected is not None:
        _check_index(store, expected, dict(zip(files, per_file, strict=True)))
    try:
        return ModelShape.from_parts(arch, tensors)
    except ValueError as exc:
        raise ShapeError(f"{store.root_uri}: {exc}") from exc


def _where(store: ObjectStore, key: str) -> str:
    return f"{store.root_uri.rstrip('/')}/{key}"


def _read_json(store: ObjectStore, key: str) -> Any:
    try:
        raw = store.read(key)
    except StorageError as exc:
        raise ShapeError(f"cannot read {key}: {exc}") from exc
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShapeError(f"{_where(store, key)}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ShapeError(f"{_where(store, key)}: not valid JSON (nested too deeply)") from exc


def _index_map(store: ObjectStore) -> dict[str, str] | None:
    try:
        store.stat(INDEX)
    except StorageError:
        return None
    index = _read_json(store, INDEX)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShapeError(f"{_where(store, INDEX)}: missing or empty 'weight_map'")
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise ShapeError(f"{_where(store, INDEX)}: 'weight_map' values must be file names")
    for value in weight_map.values():
        # Shards live under the model root: no reads of other objects through the index.
        if not value or value.startswith("/") or {".", ".."} & set(value.split("/")):
            raise ShapeError(
                f"{_where(store, INDEX)}: shard {value[:80]!r} is outside the model root"
            )
    return weight_map


def _weight_files(store: ObjectStore) -> list[str]:
    weight_map = _index_map(store)
    if weight_map is not None:
        return sorted(set(weight_map.values()))
    try:
        store.stat(SINGLE)
        return [SINGLE]
    except StorageError:
        pass
    try:
        found = [o.key for o in store.list() if o.key.endswith(".safetensors")]
    except StorageError as exc:
        raise ShapeError(f"{store.root_uri}: cannot list the model root: {exc}") from exc
    if not found:
        raise ShapeError(
            f"{store.root_uri}: no safetensors weights ({SINGLE}, {INDEX} or *.safetensors); "
            "Ridgeline reads safetensors checkpoints only"
        )
    return sorted(found)


def _read_header(store: ObjectStore, key: str) -> list[TensorInfo]:
    try:
        size = store.stat(key).size_bytes
        first = store.read_range(key, 0, min(size, FIRST_READ_BYTES))
        length = header_length(first)
        end = PREFIX_BYTES + length
        if end > size:
            raise HeaderError(f"header length {length} runs past the end of the {size}-byte file")
        raw = first[PREFIX_BYTES:end]
        if len(raw) < length:
            raw += store.read_range(key, len(first), end - len(first))
        return parse_header(raw, file_size=size)
    except StorageError as exc:
        raise ShapeError(f"cannot read {key}: {exc}") from exc
    except HeaderError as exc:
        raise ShapeError(f"{_where(store, key)}: {exc}") from exc


def _check_index(
    store: ObjectStore, weight_map: dict[str, str], per_file: dict[str, list[TensorInfo]]
) -> None:
    actual = {t.name: key for key, tensors in per_file.items() for t in tensors}
    for name, key in weight_map.items():
        if actual.get(name) != key:
            found = f"found in {actual[name]}" if name in actual else "in no shard"
            raise ShapeError(
                f"{_where(store, INDEX)}: maps tensor {name!r} to {key}, but it is {found}"
            )
