"""The RayService rendered for every example is byte-identical to the one recorded in
``snapshots/``: refactors of the renderer or of ``ServingArgs`` change nothing the cluster
sees. A deliberate change re-records them: ``RIDGELINE_RECORD_SNAPSHOTS=1 pytest`` this file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ridgeline.cli import main
from tests.conftest import EXAMPLES

SNAPSHOTS = Path(__file__).parent / "snapshots"
NODE_CACHE_CONFIG = Path(__file__).parent / "fixtures" / "node-cache-config.yaml"
# Each example with the model whose config.json (examples/models/) it is planned from.
EXAMPLE_MODELS = {
    "llama-8b.yaml": "llama-3.1-8b",
    "llama-70b-nf4.yaml": "llama-3.1-70b",
    "qwen-batch.yaml": "qwen2-7b",
    "tiny-cpu.yaml": "tiny-llama",
}


def test_every_example_has_a_snapshot() -> None:
    models = {p.name for p in EXAMPLES.glob("*.yaml")} - {"pools.yaml"}
    assert models == set(EXAMPLE_MODELS)


def _render(capsys, skeleton_dir, example: str, *extra: str) -> str:
    rc = main(
        [
            "render",
            str(EXAMPLES / example),
            "--pools",
            str(EXAMPLES / "pools.yaml"),
            "--model-uri",
            str(skeleton_dir(EXAMPLE_MODELS[example])),
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    return str(out)


def _matches(out: str, snapshot: Path) -> None:
    if os.environ.get("RIDGELINE_RECORD_SNAPSHOTS") == "1":
        snapshot.write_text(out)
    assert out == snapshot.read_text()


@pytest.mark.parametrize("example", sorted(EXAMPLE_MODELS))
def test_rendered_rayservice_is_unchanged(capsys, skeleton_dir, example: str) -> None:
    out = _render(capsys, skeleton_dir, example)
    snapshot = SNAPSHOTS / example
    _matches(out, snapshot)


def test_rendered_with_the_node_cache_is_unchanged(capsys, skeleton_dir) -> None:
    """The node cache enabled (issue 24): the worker pods' read-only claim, ServingArgs'
    node_cache_dir, then the volume and the claim."""
    out = _render(capsys, skeleton_dir, "llama-8b.yaml", "--config", str(NODE_CACHE_CONFIG))
    _matches(out, SNAPSHOTS / "llama-8b-node-cache.yaml")
