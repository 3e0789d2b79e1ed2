"""The shape reader on real safetensors files written by the tests, and on broken ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ridgeline.shape import TensorRole
from ridgeline.shape.reader import ShapeError, read_model_shape
from ridgeline_dev.checkpoints import disk_usage_bytes, tensor_specs

TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


def write_real(config: dict[str, object], out: Path, shards: int = 1) -> Path:
    """Random fp16 weights written by the safetensors library itself."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    tensors = {
        name: rng.standard_normal(shape).astype(np.float16)
        for name, _, shape in tensor_specs(config, "F16")
    }
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(out / "model.safetensors"))
        return out
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(out / fname))
        weight_map.update(dict.fromkeys(part, fname))
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return out


def expected_params(config: dict[str, object]) -> int:
    return sum(int(np.prod(shape)) for _, _, shape in tensor_specs(config))


def test_single_file_checkpoint(tmp_path: Path) -> None:
    shape = read_model_shape(str(write_real(TINY, tmp_path)))
    assert shape.num_layers == 2
    assert shape.num_kv_heads == 2
    assert shape.head_dim == 16
    assert shape.params_by_dtype == {"F16": expected_params(TINY)}
    assert shape.checkpoint_bytes == 2 * expected_params(TINY)
    assert not shape.tied_embeddings
    assert shape.params_by_role[TensorRole.LM_HEAD] == 100 * 64
    assert shape.params_by_role[TensorRole.EMBEDDING] == 100 * 64
    assert len(shape.linear_layers) == 2 * 7


def test_sharded_checkpoint_via_index(tmp_path: Path) -> None:
    root = write_real(TINY, tmp_path, shards=3)
    shape = read_model_shape(root.as_uri())
    assert shape.num_params == expected_params(TINY)


def test_qwen2_biases_and_tied_embeddings(tmp_path: Path) -> None:
    cfg = {**TINY, "model_type": "qwen2", "tie_word_embeddings": True}
    shape = read_model_shape(str(write_real(cfg, tmp_path)))
    assert shape.tied_embeddings
    assert shape.params_by_role[TensorRole.LM_HEAD] == 0
    # q/k/v biases: 1-D, kept in 16-bit
    biases = 2 * (64 + 32 + 32)
    norms = 2 * 2 * 64 + 64
    assert shape.params_by_role[TensorRole.OTHER] == biases + norms


def test_phi3_fused_projections_are_linear(tmp_path: Path) -> None:
    cfg = {**TINY, "model_type": "phi3", "architectures": ["Phi3ForCausalLM"]}
    shape = read_model_shape(str(write_real(cfg, tmp_path)))
    shapes = {(layer.out_features, layer.in_features) for layer in shape.linear_layers}
    assert (4 * 16 + 2 * 2 * 16, 64) in shapes  # qkv_proj
    assert (2 * 128, 64) in shapes  # gate_up_proj
    assert shape.num_params == expected_params(cfg)


def test_gemma2_explicit_head_dim_wins(skeleton_dir) -> None:
    shape = read_model_shape(str(skeleton_dir("gemma-2-9b")))
    assert shape.head_dim == 256  # not 3584 / 16 = 224
    assert shape.tied_embeddings
    assert shape.num_params == pytest.approx(9.24e9, rel=0.01)


def test_skeleton_is_a_valid_sparse_safetensors(skeleton_dir) -> None:
    from safetensors import safe_open

    root = skeleton_dir("llama-3.1-8b")
    assert disk_usage_bytes(root) < 50 * 2**20
    with safe_open(str(root / "model.safetensors"), framework="numpy") as fh:
        assert len(list(fh.keys())) == 1 + 32 * 9 + 2


def test_70b_sharded_skeleton(skeleton_dir, shape_of) -> None:
    sharded = read_model_shape(str(skeleton_dir("llama-3.1-70b", 4)))
    assert sharded.num_params == pytest.approx(70.55e9, rel=0.002)


# ---- malformed inputs: the error names the file and the problem ----------------------------


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"config\.json: no such file"):
        read_model_shape(str(tmp_path))


def test_config_not_json(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ShapeError, match=r"config\.json: not valid JSON"):
        read_model_shape(str(tmp_path))


def test_config_missing_field(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    config = {k: v for k, v in TINY.items() if k != "num_hidden_layers"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeError, match=r"config\.json: missing 'num_hidden_layers'"):
        read_model_shape(str(tmp_path))


def test_prequantized_checkpoint_is_refused(tmp_path: Path) -> None:
    write_real({**TINY, "quantization_config": {"quant_method": "gptq"}}, tmp_path)
    with pytest.raises(ShapeError, match="already quantized"):
        read_model_shape(str(tmp_path))


def test_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ShapeError, match="no safetensors weights"):
        read_model_shape(str(tmp_path))


def test_truncated_file(tmp_path: Path) -> None:
    root = write_real(TINY, tmp_path)
    path = root / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShapeError, match=r"model\.safetensors: .*truncated"):
        read_model_shape(str(root))


def test_implausible_header_length(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ShapeError, match=r"model\.safetensors: header length"):
        read_model_shape(str(tmp_path))


def test_header_not_json(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ShapeError, match=r"model\.safetensors: header is not valid JSON"):
        read_model_shape(str(tmp_path))


def test_wrong_byte_count_for_shape(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    header = json.dumps({"w": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 30]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"0" * 30
    )
    with pytest.raises(ShapeError, match="needs 32 bytes but data_offsets span 30"):
        read_model_shape(str(tmp_path))


def test_index_pointing_to_the_wrong_shard(tmp_path: Path) -> None:
    root = write_real(TINY, tmp_path, shards=2)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    # a tensor of shard 1 claimed by shard 2
    name = next(n for n, f in index["weight_map"].items() if f.startswith("model-00001"))
    index["weight_map"][name] = "model-00002-of-00002.safetensors"
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ShapeError, match=rf"maps tensor '{name}'"):
        read_model_shape(str(root))


def test_missing_shard(tmp_path: Path) -> None:
    root = write_real(TINY, tmp_path, shards=2)
    (root / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ShapeError, match=r"model-00002-of-00002\.safetensors: no such file"):
        read_model_shape(str(root))


# ---- hostile inputs (issue #15, item 10): one ShapeError with a one-line message -------------


def _header_file(root: Path, header: object, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    (root / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _one_line_shape_error(root: Path | str, pattern: str) -> str:
    with pytest.raises(ShapeError, match=pattern) as exc:
        read_model_shape(str(root))
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_dtype_that_is_a_list(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    _header_file(tmp_path, {"a": {"dtype": ["F16"], "shape": [1], "data_offsets": [0, 2]}}, b"xx")
    _one_line_shape_error(tmp_path, r"model\.safetensors: tensor 'a': unknown dtype \['F16'\]")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"dtype": "F16", "shape": [True], "data_offsets": [0, 2]}, "is not a list of sizes"),
        ({"dtype": "F16", "shape": [1], "data_offsets": [-2, 0]}, "is not \\[begin, end\\]"),
        ({"dtype": "F16", "shape": [1], "data_offsets": [0, 2.0]}, "is not \\[begin, end\\]"),
        ({"dtype": {"F16": 1}, "shape": [1], "data_offsets": [0, 2]}, "unknown dtype"),
    ],
)
def test_malformed_tensor_entries(tmp_path: Path, entry: dict[str, object], problem: str) -> None:
    write_real(TINY, tmp_path)
    _header_file(tmp_path, {"a": entry}, b"xx")
    _one_line_shape_error(tmp_path, problem)


def test_header_with_no_tensors_is_not_a_zero_parameter_model(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    _header_file(tmp_path, {"__metadata__": {"format": "pt"}})
    _one_line_shape_error(tmp_path, r"safetensors headers \(model\.safetensors\) list no tensors")


def test_hidden_size_smaller_than_the_heads(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "hidden_size": 2}))
    _one_line_shape_error(tmp_path, "hidden_size=2 is not a multiple of num_attention_heads=4")


def test_implausibly_large_dimension(tmp_path: Path) -> None:
    write_real(TINY, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "vocab_size": 10**400}))
    message = _one_line_shape_error(tmp_path, "'vocab_size' must be a positive integer up to")
    assert len(message) < 200  # the 400-digit number is not quoted whole


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_deeply_nested_json(tmp_path: Path, name: str) -> None:
    write_real(TINY, tmp_path)
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    if name == "config.json":
        (tmp_path / name).write_bytes(deep)
    else:
        (tmp_path / name).write_bytes(struct.pack("<Q", len(deep)) + deep)
    _one_line_shape_error(tmp_path, "nested too deeply")


def test_store_errors_are_shape_errors_too() -> None:
    _one_line_shape_error("ftp://host/model", "unsupported scheme 'ftp'")
    _one_line_shape_error("hf://just-a-name", "hf URIs are hf://org/name")


@pytest.mark.parametrize("shard", ["../other/model.safetensors", "/etc/passwd", ""])
def test_index_cannot_point_outside_the_model_root(tmp_path: Path, shard: str) -> None:
    root = write_real(TINY, tmp_path, shards=2)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"] = dict.fromkeys(index["weight_map"], shard)
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    _one_line_shape_error(root, "is outside the model root")
