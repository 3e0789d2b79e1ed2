"""Parse a safetensors header without touching tensor data.

Format: 8 bytes little-endian header length N, then N bytes of JSON mapping tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the
header), plus an optional ``__metadata__`` map of strings.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

# Bytes per element of every dtype the safetensors spec names.
DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

FLOAT_DTYPES = frozenset(
    {"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
)

# A header larger than this is corrupt, not a model (safetensors itself caps it at 100 MB).
MAX_HEADER_BYTES = 100 * 1000 * 1000
PREFIX_BYTES = 8


class HeaderError(ValueError):
    """What is wrong with a header, without the file name (the caller adds it)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return math.ceil(self.numel * DTYPE_BYTES[self.dtype])


def header_length(prefix: bytes) -> int:
    if len(prefix) < PREFIX_BYTES:
        raise HeaderError(f"file is {len(prefix)} bytes, shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix[:PREFIX_BYTES])
    if length == 0 or length > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {length} is not plausible (0 < N <= {MAX_HEADER_BYTES})")
    return int(length)


def parse_header(raw: bytes, file_size: int | None = None) -> list[TensorInfo]:
    """Tensors described by a header's JSON bytes; checks offsets against the file size."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeaderError(f"header is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise HeaderError("header is not a JSON object")
    data_bytes = None if file_size is None else file_size - PREFIX_BYTES - len(raw)
    tensors = []
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        tensors.append(_tensor(name, entry, data_bytes))
    return tensors


def _tensor(name: str, entry: object, data_bytes: int | None) -> TensorInfo:
    if not isinstance(entry, dict):
        raise HeaderError(f"tensor {name!r}: entry is not an object")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise HeaderError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise HeaderError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    info = TensorInfo(name=name, dtype=dtype, shape=tuple(shape))
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise HeaderError(f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if end - begin != info.nbytes:
        raise HeaderError(
            f"tensor {name!r}: {dtype}{list(shape)} needs {info.nbytes} bytes but data_offsets "
            f"span {end - begin}"
        )
    if data_bytes is not None and end > data_bytes:
        raise HeaderError(
            f"tensor {name!r}: data ends at byte {end} but the file holds {data_bytes} data bytes "
            "(truncated?)"
        )
    return info
