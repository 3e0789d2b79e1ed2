"""The full stack on kind, where Docker exists: images built and loaded, KubeRay and the chart
installed, a tiny CPU model applied and answering an OpenAI request (tests/e2e/kind-e2e.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.docker
def test_full_stack_on_kind() -> None:
    result = subprocess.run(
        [str(REPO / "tests" / "e2e" / "kind-e2e.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "answer:" in result.stdout
