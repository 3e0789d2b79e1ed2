"""Every command of the README's quick start runs as written: read from the README (so they
cannot drift), from a fresh directory holding the repository's examples, with no credentials
and no network."""

from __future__ import annotations

import json
import re
import shlex
import socket
from pathlib import Path

import pytest
import yaml

from ridgeline.cli import main as ridgeline

REPO = Path(__file__).resolve().parents[2]
PROGRAM = ".venv/bin/ridgeline"


def quick_start() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Quick start[^\n]*\n(.*?)^## ", text, re.S | re.M)
    assert match, "README.md has no '## Quick start' section"
    return match.group(1)


def blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section, re.S | re.M)


def commands() -> list[list[str]]:
    lines = [ln for block in blocks(quick_start(), "bash") for ln in block.splitlines()]
    return [shlex.split(ln, comments=True) for ln in lines if ln.strip()]


def test_quick_start_has_the_commands_a_user_runs() -> None:
    argvs = commands()
    assert len(argvs) >= 4
    assert all(argv[0] == PROGRAM for argv in argvs), argvs
    assert {argv[1] for argv in argvs} == {"plan", "shape"}


def test_quick_start_manifest_is_the_example_file() -> None:
    (block,) = blocks(quick_start(), "yaml")
    first, _ = block.split("\n", 1)
    path = REPO / first.removeprefix("# ").strip()
    assert yaml.safe_load(block) == yaml.safe_load(path.read_text())


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh directory with the repository's examples; no credentials; any connection fails."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))

    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(f"the quick start must not use the network (connect to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a[1:]))
def test_quick_start_command_works_as_written(
    argv: list[str], offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ridgeline(argv[1:]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if "-o" in argv and argv[argv.index("-o") + 1] == "json":
        assert json.loads(out)["gpusPerReplica"] >= 1
    elif argv[1] == "shape":
        assert json.loads(out)["paramsSource"] == "config"
    else:
        assert "estimated from config.json" in out
    if "--plot" in argv:
        assert (offline / argv[argv.index("--plot") + 1]).stat().st_size > 0


def test_without_model_uri_an_unreachable_store_is_an_error_that_says_what_to_do(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No silent fallback: spec.model.uri is what gets read, and the error names the way out."""
    argv = commands()[0]
    cut = argv.index("--model-uri")
    assert ridgeline([*argv[1:cut], *argv[cut + 2 :]]) == 1
    err = capsys.readouterr().err
    assert "s3://models/meta-llama/Llama-3.1-8B-Instruct" in err
    assert "--model-uri" in err
