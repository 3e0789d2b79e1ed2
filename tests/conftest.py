from __future__ import annotations

import json
from pathlib import Path

import pytest

from ridgeline.shape import ModelShape, read_model_shape
from ridgeline_dev.checkpoints import write_skeleton

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def example_config(name: str) -> dict[str, object]:
    return json.loads((EXAMPLES / "models" / name / "config.json").read_text())


@pytest.fixture(scope="session")
def skeleton_dir(tmp_path_factory: pytest.TempPathFactory):
    made: dict[tuple[str, int], Path] = {}

    def make(name: str, shards: int = 1) -> Path:
        key = (name, shards)
        if key not in made:
            out = tmp_path_factory.mktemp(f"{name}-{shards}")
            made[key] = write_skeleton(example_config(name), out, shards=shards)
        return made[key]

    return make


@pytest.fixture(scope="session")
def shape_of(skeleton_dir):
    cache: dict[str, ModelShape] = {}

    def get(name: str) -> ModelShape:
        if name not in cache:
            cache[name] = read_model_shape(str(skeleton_dir(name)))
        return cache[name]

    return get
