"""Download progress: a redrawn line on a terminal, periodic log lines in a pod (no TTY)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from ridgeline.api.serving_args import ServingArgs
from ridgeline.storage import open_store
from ridgeline.storage.download import download_model
from ridgeline.storage.progress import Progress, describe, human_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_describe_has_bytes_rate_and_time_left() -> None:
    text = describe(done=2_000_000_000, total=16_000_000_000, seconds=20.0)
    assert text == "2.00 GB / 16.00 GB (12.5%), 100.00 MB/s, 2m20s left"
    assert describe(5, 5, 1.0).endswith("done")
    assert describe(0, 5, 0.0).endswith("time left unknown")
    assert human_seconds(7325) == "2h02m"


def test_terminal_line_is_redrawn_in_place() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress("weights s3://m", 1000, "bar", stream=out, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        bar.add(100)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 11  # ten redraws and the final one
    assert text.endswith("\n")
    assert text.count("\n") == 1
    last = text.rsplit("\r", 1)[1]
    assert "1.00 KB / 1.00 KB (100.0%)" in last
    assert "done" in last
    assert "(50.0%), 100 B/s, 5s left" in text


def test_redraws_are_rate_limited() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress("w", 10_000, "bar", stream=out, clock=clock)
    for _ in range(1000):
        clock.now += 0.001
        bar.add(10)
    assert out.getvalue().count("\r") <= 5


def test_without_a_terminal_a_line_every_ten_percent_or_ten_seconds() -> None:
    clock, lines = Clock(), []
    progress = Progress("weights s3://m", 1000, "log", emit=lines.append, clock=clock)
    for _ in range(100):  # 1% a step, one step a second: a line every 10% (10 s)
        clock.now += 1.0
        progress.add(10)
    progress.close()
    assert lines[0] == "weights s3://m: downloading 1.00 KB"
    assert len(lines) == 1 + 9 + 1  # start, 10%..90%, final
    assert "(10.0%), 10 B/s, 1m30s left" in lines[1]
    assert lines[-1].endswith("(100.0%), 10 B/s, done")
    slow, lines = Clock(), []
    progress = Progress("w", 10**9, "log", emit=lines.append, clock=slow)
    for _ in range(60):  # tiny steps: time, not fraction, triggers the lines
        slow.now += 1.0
        progress.add(1000)
    assert len(lines) == 1 + 6


def test_auto_picks_by_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert Progress.auto("w", 1).mode == "bar"
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert Progress.auto("w", 1).mode == "log"
    assert Progress.auto("w", 1, enabled=False).mode == "off"


def test_download_logs_progress_without_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"x" * 400_000)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    with caplog.at_level(logging.INFO, logger="ridgeline.download"):
        download_model(open_store(str(src)), tmp_path / "cache", part_bytes=10_000)
    lines = [
        r.getMessage()
        for r in caplog.records
        if "downloading" in r.getMessage() or "%" in r.getMessage()
    ]
    assert lines[0].endswith("downloading 400.00 KB")
    assert len(lines) >= 3
    assert lines[-1].endswith("done")


def test_logs_go_to_stderr_where_logging_is_not_configured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray worker configures no logging: INFO would be dropped, so the lines go to stderr."""
    monkeypatch.setattr(logging.getLogger("ridgeline.download"), "isEnabledFor", lambda _: False)
    progress = Progress.auto("weights s3://m", 100)
    progress.add(100)
    progress.close()
    err = capsys.readouterr().err
    assert "weights s3://m: downloading 100 B" in err
    assert "(100.0%)" in err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _args(src: Path, cache: Path) -> ServingArgs:
    return ServingArgs(
        model_uri=src.as_uri(),
        model_name="m",
        max_batch_size=1,
        max_context_tokens=64,
        gpus_per_replica=0,
        compute_dtype="float32",
        cache_dir=str(cache),
        download_parallelism=1,
    )


def test_ridgeline_serve_shows_the_download_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ridgeline serve` downloads before Ray starts, where its terminal can show it; the
    replica then reuses the cache."""
    from ridgeline_serving.local import fetch_weights

    src = tmp_path / "model"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"x" * 3_000_000)
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr("ridgeline.storage.progress.REDRAW_EVERY_S", 0.0)
    stats = fetch_weights(_args(src, tmp_path / "cache"))
    assert not stats.reused
    drawn = terminal.getvalue()
    assert drawn.count("\r") >= 2  # redrawn in place
    last = drawn.rsplit("\r", 1)[1]
    assert "3.00 MB / 3.00 MB (100.0%)" in last
    assert last.endswith(", done\x1b[K\n")
    out = capsys.readouterr().out
    assert f"weights: {src.as_uri()} -> {tmp_path / 'cache'}" in out
    assert "weights: 3.00 MB in" in out
    again = fetch_weights(_args(src, tmp_path / "cache"))
    assert again.reused
    assert "weights: cached copy is current (3.00 MB)" in capsys.readouterr().out
