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
    except RecursionError as exc:
        raise HeaderError("header is not valid JSON: nested too deeply") from exc
    if not isinstance(doc, dict):
        raise HeaderError("header is not a JSON object")
    data_bytes = None if file_size is None else file_size - PREFIX_BYTES - len(raw)
    tensors = []
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        tensors.append(_tensor(name, entry, data_bytes))
    return tensors


def _is_size(value: object) -> bool:
    # bool is an int to Python, not a size to safetensors.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: object) -> str:
    """A value for an error message: a hostile header can hold megabytes in one field."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _tensor(name: str, entry: object, data_bytes: int | None) -> TensorInfo:
    if not isinstance(entry, dict):
        raise HeaderError(f"tensor {_short(name)}: entry is not an object")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise HeaderError(f"tensor {_short(name)}: unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
        raise HeaderError(f"tensor {_short(name)}: shape {_short(shape)} is not a list of sizes")
    info = TensorInfo(name=name, dtype=dtype, shape=tuple(shape))
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_size, offsets)):
        raise HeaderError(
            f"tensor {_short(name)}: data_offsets {_short(offsets)} is not [begin, end]"
        )
    begin, end = offsets
    if end - begin != info.nbytes:
        raise HeaderError(
            f"tensor {_short(name)}: {dtype}{_short(shape)} needs {info.nbytes} bytes but "
            f"data_offsets span {end - begin}"
        )
    if data_bytes is not None and end > data_bytes:
        raise HeaderError(
            f"tensor {_short(name)}: data ends at byte {end} but the file holds {data_bytes} "
            "data bytes (truncated?)"
        )
    return info
