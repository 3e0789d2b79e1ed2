from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from ridgeline.shape import ModelShape
from ridgeline.shape.reader import read_model_shape
from ridgeline_dev.checkpoints import write_skeleton

REPO = Path(__file__).resolve().parents[1]


def _docker_engine() -> bool:
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `docker` or `gpu` run where those exist and say why they did not here."""
    needs = {
        "docker": (_docker_engine, "no Docker engine on this machine (run: make e2e-kind)"),
        "gpu": (_cuda, "no CUDA device on this machine"),
    }
    for marker, (probe, reason) in needs.items():
        marked = [item for item in items if marker in item.keywords]
        if marked and not probe():
            for item in marked:
                item.add_marker(pytest.mark.skip(reason=reason))


# The run's lowest free disk, sampled after every test: a CI machine's free space varies
# (a run once failed with ENOSPC), and the summary says how close each run came.
_lowest_free: dict[int, tuple[int, str]] = {}
_WATCHED = (REPO, Path(tempfile.gettempdir()), Path.home())


def _sample_free_disk(when: str) -> None:
    for where in _WATCHED:
        if not where.exists():  # a HOME that points nowhere
            continue
        device, free = where.stat().st_dev, shutil.disk_usage(where).free
        if device not in _lowest_free or free < _lowest_free[device][0]:
            _lowest_free[device] = (free, when)


def pytest_sessionstart(session: pytest.Session) -> None:
    _sample_free_disk("the start")


def pytest_runtest_teardown(item: pytest.Item) -> None:
    _sample_free_disk(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for device, (free, when) in _lowest_free.items():
        paths = ", ".join(str(p) for p in _WATCHED if p.exists() and p.stat().st_dev == device)
        terminalreporter.write_line(
            f"lowest free disk at {paths}: {free / 2**30:.1f} GiB (after {when})"
        )


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
