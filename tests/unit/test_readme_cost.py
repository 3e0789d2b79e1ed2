"""The README quick start's cost column is what `ridgeline plan` prints for the example pools,
and the example prices say where they come from."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ridgeline.cli import main as ridgeline
from tests.conftest import EXAMPLES
from tests.unit.test_readme_quickstart import blocks, quick_start

PLAN = [
    "plan",
    str(EXAMPLES / "llama-8b.yaml"),
    "--pools",
    str(EXAMPLES / "pools.yaml"),
    "--model-uri",
    str(EXAMPLES / "models" / "llama-3.1-8b"),
]


def test_the_quick_starts_option_table_is_what_plan_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (shown,) = blocks(quick_start(), "text")
    assert "cost/Mtok" in shown
    assert ridgeline(PLAN) == 0
    printed = {line.rstrip() for line in capsys.readouterr().out.splitlines()}
    for line in shown.splitlines():
        assert line.rstrip() in printed, line


def test_the_quick_starts_cost_at_a_batch_is_what_plan_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = re.search(r"`--batch (\d+)` with `\.\.\.; ([^`]+)`", " ".join(quick_start().split()))
    assert said, "the quick start quotes the cost that --batch N prints"
    assert ridgeline([*PLAN, "--batch", said.group(1)]) == 0
    assert said.group(2) in capsys.readouterr().out


def test_the_example_prices_name_their_source() -> None:
    text = (EXAMPLES / "pools.yaml").read_text()
    assert text.count("\n  pricePerNodeHour: ") == 3
    for needed in ("On-Demand", "us-east-1", "skypilot-catalog", "June 2025", "p5.48xlarge"):
        assert needed in text, needed


def test_make_plans_shows_the_cost_column(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ridgeline_dev import demo_plans

    argv = ["demo_plans", "--examples", str(EXAMPLES), "--models", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    assert demo_plans.main() == 0
    out = capsys.readouterr().out
    # every example on a GPU pool (all priced); the CPU one (unpriced) has no column
    assert out.count("cost/Mtok") == 3
    assert out.count(" per million tokens\n") == 3
