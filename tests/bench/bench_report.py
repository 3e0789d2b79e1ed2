"""docs/benchmarks.md: one section per benchmark, replaced in place on each run."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nWritten by `make bench`; each section records the machine it ran on.\n"


def write_section(title: str, body: str, accelerator: str | None = None) -> None:
    """Replace (or append) the section ``title``; its header names this machine, and the
    accelerator where the figures are a GPU's."""
    text = DOC.read_text() if DOC.exists() else HEADER
    host = f"{platform.machine()}, {_cpus()} CPUs"
    machine = f"{accelerator + ' on ' if accelerator else ''}{host}, {time.strftime('%Y-%m-%d')}"
    section = f"## {title}\n\n_Measured on {machine}._\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    DOC.write_text(text)


def _cpus() -> int:
    import os

    return os.cpu_count() or 1
