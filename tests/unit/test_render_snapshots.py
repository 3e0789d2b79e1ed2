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


@pytest.mark.parametrize("example", sorted(EXAMPLE_MODELS))
def test_rendered_rayservice_is_unchanged(capsys, skeleton_dir, example: str) -> None:
    rc = main(
        [
            "render",
            str(EXAMPLES / example),
            "--pools",
            str(EXAMPLES / "pools.yaml"),
            "--model-uri",
            str(skeleton_dir(EXAMPLE_MODELS[example])),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    snapshot = SNAPSHOTS / example
    if os.environ.get("RIDGELINE_RECORD_SNAPSHOTS") == "1":
        snapshot.write_text(out)
    assert out == snapshot.read_text()
