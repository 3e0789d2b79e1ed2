"""`ridgeline serve` started for a benchmark: a manifest, free ports, its log, and the wait
until it answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_serve(
    manifest: Path, work: Path, timeout_s: float = 300
) -> tuple[subprocess.Popen[bytes], str]:
    """`ridgeline serve MANIFEST` with its cache and log under ``work``; returns the process and
    its base URL once ``/v1/models`` answers, or exits with the log."""
    from ridgeline_dev.cluster import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "ridgeline.cli", "serve", str(manifest), "--port", str(port)]
    cmd += ["--metrics-port", str(free_port())]
    log = (work / "serve.log").open("w")
    env = {**os.environ, "RIDGELINE_CACHE_DIR": str(work / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit((work / "serve.log").read_text())
        try:
            httpx.get(base + "/v1/models", timeout=2).raise_for_status()
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
