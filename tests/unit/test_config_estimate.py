"""Planning from config.json alone: the parameter count from the architecture, within 1% of the
safetensors count for every example model, and said so in the plan's reasons."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from ridgeline.cli import main as ridgeline
from ridgeline.shape import ParamsSource, TensorRole
from ridgeline.shape.config_estimate import estimate_model_shape
from ridgeline.shape.plan_ahead import read_or_estimate_model_shape
from ridgeline.shape.reader import NoWeightsError, ShapeError, read_model_shape

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MODELS = sorted(p.name for p in (REPO / "examples" / "models").iterdir())

# Parameter counts of the published checkpoints (the safetensors index's total_size / 2 on the
# Hub, or the model card): the estimate must land on them from the config alone. Checked for the
# examples that examples/models/ holds.
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "mistral-7b-v0.3": 7_248_023_552,
    "qwen2-7b": 7_615_616_512,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini-4k": 3_821_079_552,
    "mixtral-8x7b": 46_702_792_704,
}


def config_of(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(
        (REPO / "examples" / "models" / name / "config.json").read_text()
    )
    return loaded


def config_only_dir(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    root.mkdir()
    shutil.copy(REPO / "examples" / "models" / name / "config.json", root / "config.json")
    return root


@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_estimate_within_1_percent_of_the_safetensors_count(name: str, skeleton_dir) -> None:
    exact = read_model_shape(str(skeleton_dir(name)))
    estimate = estimate_model_shape(config_of(name))
    assert exact.params_source is ParamsSource.SAFETENSORS
    assert estimate.params_source is ParamsSource.CONFIG
    assert abs(estimate.num_params - exact.num_params) <= 0.01 * exact.num_params
    # What the planner sizes by role (16-bit embeddings and head, quantized linears) too.
    for role in (TensorRole.LINEAR, TensorRole.EMBEDDING, TensorRole.LM_HEAD):
        assert abs(estimate.params_by_role[role] - exact.params_by_role[role]) <= (
            0.01 * exact.num_params
        ), role
    assert estimate.tied_embeddings == exact.tied_embeddings
    assert estimate.checkpoint_bytes == pytest.approx(exact.checkpoint_bytes, rel=0.01)


@pytest.mark.parametrize(
    ("name", "params"), sorted((n, p) for n, p in PUBLISHED.items() if n in EXAMPLE_MODELS)
)
def test_estimate_matches_published_counts(name: str, params: int) -> None:
    assert estimate_model_shape(config_of(name)).num_params == pytest.approx(params, rel=0.01)


def test_qwen2_attention_biases_and_gemma2_norms_are_counted() -> None:
    qwen = estimate_model_shape(config_of("qwen2-7b"))
    # q, k and v biases: (28 + 2 x 4) x 128 per layer, 28 layers.
    biases = 28 * (28 + 2 * 4) * 128
    norms = 28 * 2 * 3584 + 3584
    assert qwen.params_by_role[TensorRole.OTHER] == biases + norms
    gemma = estimate_model_shape(config_of("gemma-2-9b"))
    assert gemma.params_by_role[TensorRole.OTHER] == 42 * 4 * 3584 + 3584
    assert gemma.params_by_role[TensorRole.LM_HEAD] == 0  # tied


def test_moe_experts_and_shared_expert_are_counted() -> None:
    mixtral = estimate_model_shape(config_of("mixtral-8x7b"))
    dense = estimate_model_shape({**config_of("mixtral-8x7b"), "num_local_experts": 1})
    per_expert = 32 * 3 * 4096 * 14336
    router = 32 * 8 * 4096
    assert mixtral.num_params - dense.num_params == 7 * per_expert + router
    qwen_moe = {
        "model_type": "qwen2_moe",
        "hidden_size": 64,
        "intermediate_size": 256,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 128,
        "num_experts": 4,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "tie_word_embeddings": False,
    }
    layer = (
        (64 * 64 + 2 * 32 * 64)
        + (64 + 2 * 32)  # q (4 x 16), k and v (2 x 16), their biases
        + 64 * 64  # o
        + 4 * 64  # router
        + 4 * 3 * 32 * 64  # four experts: gate, up, down
        + 3 * 128 * 64
        + 64  # the shared expert and its gate
        + 2 * 64  # norms
    )
    assert estimate_model_shape(qwen_moe).num_params == 2 * layer + 2 * 100 * 64 + 64


def test_unknown_family_is_a_llama_style_guess_and_says_so(tmp_path: Path) -> None:
    root = config_only_dir("llama-3.1-8b", tmp_path)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, "model_type": "newfangled"}))
    shape = read_or_estimate_model_shape(str(root))
    assert shape.params_source is ParamsSource.CONFIG_GUESS


def test_config_only_root_is_refused_unless_planning_ahead(tmp_path: Path) -> None:
    """The operator and `ridgeline serve` need weights; only planning ahead estimates."""
    root = config_only_dir("llama-3.1-8b", tmp_path)
    with pytest.raises(NoWeightsError, match="no safetensors weights"):
        read_model_shape(str(root))
    shape = read_or_estimate_model_shape(str(root))
    assert shape.params_source is ParamsSource.CONFIG
    assert shape.num_params == PUBLISHED["llama-3.1-8b"]


def test_safetensors_headers_win_over_the_estimate(skeleton_dir) -> None:
    shape = read_or_estimate_model_shape(str(skeleton_dir("qwen2-7b")))
    assert shape.params_source is ParamsSource.SAFETENSORS


def test_config_that_cannot_be_estimated_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ShapeError, match=r"config\.json"):
        read_or_estimate_model_shape(str(tmp_path))


def test_plan_from_config_alone_says_the_weights_are_estimated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = config_only_dir("llama-3.1-8b", tmp_path)
    argv = ["plan", str(REPO / "examples" / "llama-8b.yaml"), "--pools"]
    argv += [str(REPO / "examples" / "pools.yaml"), "--model-uri", str(root), "-o", "json"]
    assert ridgeline(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert any("estimated from config.json" in r for r in plan["reasons"])
    assert plan["weightBytes"] == pytest.approx(2 * PUBLISHED["llama-3.1-8b"], rel=0.01)


def test_plan_from_safetensors_does_not_claim_an_estimate(
    skeleton_dir, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plan", str(REPO / "examples" / "llama-8b.yaml"), "--pools"]
    argv += [
        str(REPO / "examples" / "pools.yaml"),
        "--model-uri",
        str(skeleton_dir("llama-3.1-8b")),
    ]
    assert ridgeline([*argv, "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not any("estimated" in r for r in plan["reasons"])


class _ConfigOnlyHub(http.server.BaseHTTPRequestHandler):
    """A Hub repo holding config.json and no safetensors (say, a .bin-only or gated upload)."""

    config: ClassVar[bytes] = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/api/models/org/llama/tree/main"):
            body = json.dumps(
                [{"type": "file", "path": "config.json", "size": len(self.config), "oid": "x"}]
            ).encode()
        elif self.path == "/org/llama/resolve/main/config.json":
            body = self.config
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def config_only_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _ConfigOnlyHub.config = (REPO / "examples/models/llama-3.1-8b/config.json").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ConfigOnlyHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield "hf://org/llama@main"
    server.shutdown()


def test_hf_repo_with_config_only_is_estimated(config_only_hub: str) -> None:
    shape = read_or_estimate_model_shape(config_only_hub)
    assert shape.params_source is ParamsSource.CONFIG
    assert shape.num_params == PUBLISHED["llama-3.1-8b"]


@pytest.mark.parametrize(
    ("manifest", "model"),
    [
        ("llama-8b.yaml", "llama-3.1-8b"),
        ("llama-70b-nf4.yaml", "llama-3.1-70b"),
        ("qwen-batch.yaml", "qwen2-7b"),
        ("tiny-cpu.yaml", "tiny-llama"),
    ],
)
def test_config_only_plan_is_the_safetensors_plan(
    manifest: str, model: str, tmp_path: Path, skeleton_dir, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same sizing either way (int8/nf4 overheads included); only the reasons differ."""
    plans = []
    for root in (config_only_dir(model, tmp_path), skeleton_dir(model)):
        argv = ["plan", str(REPO / "examples" / manifest), "--pools"]
        argv += [str(REPO / "examples" / "pools.yaml"), "--model-uri", str(root), "-o", "json"]
        assert ridgeline(argv) == 0
        plans.append(json.loads(capsys.readouterr().out))
    estimated, exact = plans
    assert [r for r in estimated["reasons"] if "estimated from config.json" not in r] == exact[
        "reasons"
    ]
    assert {k: v for k, v in estimated.items() if k != "reasons"} == {
        k: v for k, v in exact.items() if k != "reasons"
    }
