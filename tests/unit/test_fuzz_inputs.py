"""Fuzzing the readers of user-supplied files (hypothesis): any config.json, safetensors header
or model.yaml gives a result or one documented error with a short message, never another
exception. The shape reader's error is ShapeError with a one-line message (the operator maps it
to Planned=False ModelUnreadable); the manifest loader's is ManifestError naming the file."""

from __future__ import annotations

import contextlib
import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ridgeline.api import InferenceModel
from ridgeline.config_files import load_pools
from ridgeline.manifest import ManifestError, load_inference_model
from ridgeline.planner import InfeasiblePlanError, plan_model
from ridgeline.shape import ModelShape
from ridgeline.shape.reader import ShapeError, read_model_shape
from ridgeline.storage import ObjectInfo, StorageError
from ridgeline_dev.checkpoints import tensor_specs
from tests.conftest import EXAMPLES

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 10,
    "max_position_embeddings": 64,
}

# JSON values with the awkward cases in reach: huge and negative numbers, floats, bools, nulls,
# lists where scalars belong, empty and odd strings.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 2**31, 2**63, 10**400])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["F16", "BF16", "I8", "F4", "__metadata__", "", "\x00"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


class MemoryStore:
    """An ObjectStore over a dict, so the fuzz exercises the reader rather than a filesystem."""

    root_uri = "mem://model"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def stat(self, key: str) -> ObjectInfo:
        if key not in self.files:
            raise StorageError(f"{self.root_uri}/{key}: no such file")
        return ObjectInfo(key, len(self.files[key]), "v1")

    def list(self) -> list[ObjectInfo]:
        return [self.stat(k) for k in sorted(self.files)]

    def read_range(self, key: str, start: int, length: int, if_version: str | None = None) -> bytes:
        self.stat(key)
        return self.files[key][start : start + length]

    def read(self, key: str) -> bytes:
        return self.read_range(key, 0, len(self.files.get(key, b"")))

    def iter_range(
        self, key: str, start: int, length: int, if_version: str | None = None
    ) -> Iterator[bytes]:
        yield self.read_range(key, start, length)


def _safetensors(header: object, data_bytes: int = 0) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data_bytes


def _valid_header(config: dict[str, Any]) -> tuple[dict[str, Any], int]:
    header: dict[str, Any] = {}
    offset = 0
    for name, dtype, shape in tensor_specs(config, "F16"):
        size = 2
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "any-json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "any-json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=50_000))
        return b'{"hidden_size": ' + b"[" * depth + b"]" * depth + b"}"
    config: dict[str, Any] = dict(TINY)
    for key in draw(st.lists(st.sampled_from([*TINY, "head_dim", "text_config"]), max_size=3)):
        config[key] = draw(json_values)
    if draw(st.booleans()):
        config["quantization_config"] = draw(json_values)
    return json.dumps(config).encode()


@st.composite
def weights(draw: st.DrawFn) -> dict[str, bytes]:
    kind = draw(st.sampled_from(["mutated", "mutated", "valid", "empty", "bytes", "none"]))
    if kind == "none":
        return {}
    if kind == "bytes":
        return {"model.safetensors": draw(st.binary(max_size=64))}
    if kind == "empty":
        return {"model.safetensors": _safetensors({"__metadata__": {"format": "pt"}})}
    header, size = _valid_header(TINY)
    if kind == "mutated":
        for name in draw(st.lists(st.sampled_from(sorted(header)), max_size=2)):
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
            if field is None or not isinstance(header[name], dict):
                header[name] = draw(json_values)
            else:
                header[name][field] = draw(json_values)
        size = draw(st.sampled_from([size, 0, size // 2]))
    return {"model.safetensors": _safetensors(header, size)}


@FUZZ
@given(config=configs(), files=weights())
def test_shape_reader_gives_a_shape_or_a_one_line_shape_error(
    config: bytes, files: dict[str, bytes]
) -> None:
    store = MemoryStore({"config.json": config, **files})
    try:
        shape = read_model_shape(store)  # type: ignore[arg-type]
    except ShapeError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.startswith(("mem://model", "cannot read"))
        assert len(message) < 600
        return
    assert isinstance(shape, ModelShape)
    assert shape.num_params > 0
    # What the reader accepts, the planner sizes or refuses with a reason.
    model = load_inference_model(EXAMPLES / "tiny-cpu.yaml")
    with contextlib.suppress(InfeasiblePlanError):
        plan_model(shape, model.spec, load_pools(EXAMPLES / "pools.yaml"))


# ---- the manifest loader ----------------------------------------------------------------------

MANIFEST: dict[str, Any] = yaml.safe_load((EXAMPLES / "tiny-cpu.yaml").read_text())


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [prefix] + [p for k, v in doc.items() for p in _paths(v, (*prefix, k))]
    return [prefix]


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    return {**doc, path[0]: _replace(doc[path[0]], path[1:], value)}


yaml_scalars = st.sampled_from(
    [".inf", "-.inf", ".nan", "1e300", "10" * 200, "~", "''", "!!binary aGk=", "[", "&a [*a]"]
)


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "raw-scalar", "bytes", "text", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=20_000))
        opener = draw(st.sampled_from(["[", "{a: ", "- "]))
        return ("spec: " + opener * depth).encode()
    doc = MANIFEST
    for path in draw(st.lists(st.sampled_from(_paths(MANIFEST)), min_size=1, max_size=3)):
        try:
            doc = _replace(doc, path, draw(json_values))
        except (KeyError, TypeError):  # an earlier mutation removed the parent
            continue
    text = yaml.safe_dump(doc)
    if kind == "raw-scalar":
        # YAML spellings json_values cannot produce: .inf, 1e300, anchors, tags
        field = draw(st.sampled_from(["maxContextTokens", "max", "min", "name", "uri"]))
        text = "\n".join(
            f"{line.split(':')[0]}: {draw(yaml_scalars)}"
            if line.strip().startswith(field)
            else line
            for line in text.splitlines()
        )
    return text.encode()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@FUZZ
@given(content=manifests())
def test_manifest_loader_gives_a_model_or_a_manifest_error(scratch: Path, content: bytes) -> None:
    path = scratch / "model.yaml"
    path.write_bytes(content)
    try:
        model = load_inference_model(path)
    except ManifestError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ")
        assert "Traceback" not in message
        assert all(len(line) < 400 for line in message.splitlines())
        return
    assert isinstance(model, InferenceModel)
    assert model.metadata.name
