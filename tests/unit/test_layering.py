"""The layering contract (``[tool.importlinter]`` in pyproject.toml, run by ``make lint``) holds,
and breaks on a planted reverse import: the core importing the serving app, or a pure module
reading the file system."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# lint-imports is a dev dependency: missing, the test fails rather than skips.
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SOURCES = ("operator/src", "serving/src")


def _lint(pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=cwd,
        env={"PYTHONPATH": ":".join(map(str, pythonpath)), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_with(tmp_path: Path, module: str, line: str) -> list[Path]:
    """The packages copied to ``tmp_path`` with ``line`` added to ``module``'s imports."""
    roots = []
    for src in SOURCES:
        root = tmp_path / src
        shutil.copytree(REPO / src, root, ignore=shutil.ignore_patterns("__pycache__"))
        roots.append(root)
    path = next(r / module for r in roots if (r / module).exists())
    text = path.read_text()
    head = "from __future__ import annotations\n"
    assert head in text
    path.write_text(text.replace(head, head + line + "\n", 1))
    return roots


def test_the_contracts_hold() -> None:
    out = _lint([REPO / s for s in SOURCES], REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "ridgeline/render/rayservice.py",
            "import ridgeline_serving.app  # noqa",
            "ridgeline imports neither the operator nor the serving app BROKEN",
        ),
        (
            "ridgeline/cli.py",
            "import ridgeline_operator.main  # noqa",
            "ridgeline imports neither the operator nor the serving app BROKEN",
        ),
        ("ridgeline/planner/roofline.py", "import os  # noqa", "object-store client BROKEN"),
        (
            "ridgeline/controller.py",
            "import ridgeline.storage  # noqa",
            "object-store client BROKEN",
        ),
    ],
)
def test_a_planted_import_breaks_the_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    roots = _copy_with(tmp_path, module, line)
    out = _lint(roots, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert broken in " ".join(out.stdout.split()), out.stdout
