"""`ridgeline serve MODEL.yaml`, the local main job, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai

from ridgeline_dev.cluster import free_port
from ridgeline_dev.s3server import S3Server

MANIFEST = """\
apiVersion: ridgeline.dev/v1alpha1
kind: InferenceModel
metadata: {{name: local-tiny}}
spec:
  model: {{uri: "{uri}"}}
  workload: {{maxContextTokens: 512}}
  accelerators: [cpu]
"""


def test_ridgeline_serve_plans_serves_and_stops_on_sigint(
    s3: S3Server, tiny_uri: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "model.yaml"
    manifest.write_text(MANIFEST.format(uri=tiny_uri))
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ridgeline.cli",
            "serve",
            str(manifest),
            "--port",
            str(port),
            "--metrics-port",
            str(free_port()),
        ],
        env={**os.environ, **s3.env(), "RIDGELINE_CACHE_DIR": str(tmp_path / "cache")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/v1/models", timeout=2
                ) as resp:
                    assert resp.status == 200
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        out = client.chat.completions.create(
            model="local-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert out.choices[0].message.content is not None
        endpoint_line = f"OpenAI endpoint: http://127.0.0.1:{port}/v1"
        deadline = (
            time.monotonic() + 30
        )  # printed once serve.run returns, just after the API answers
        while (
            endpoint_line not in (tmp_path / "serve.log").read_text()
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        printed = (tmp_path / "serve.log").read_text()
        assert "local-tiny: 1 x cpu per replica on pool local" in printed
        # No terminal here: the download reports as log lines, with its figures at the end.
        assert f"weights {tiny_uri}: downloading" in printed
        assert "(100.0%)" in printed
        assert "done" in printed
        assert endpoint_line in printed
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    assert code == 0
    assert list((tmp_path / "cache").rglob("model.safetensors"))


def test_ridgeline_serve_refuses_a_bad_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "model.yaml"
    manifest.write_text(MANIFEST.format(uri="ftp://nope"))
    result = subprocess.run(
        [sys.executable, "-m", "ridgeline.cli", "serve", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "model.uri must be" in result.stderr
