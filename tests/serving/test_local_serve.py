"""`ridgeline serve MODEL.yaml`, the local main job, as a user runs it."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

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
    metrics_port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ridgeline.cli",
            "serve",
            str(manifest),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
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
        # --host 127.0.0.1: nothing ridgeline serve opens (Ray's metrics export, GCS, raylet,
        # agents, the Serve proxy) listens beyond loopback.
        listeners = _listeners(proc.pid)
        assert any(port == p for _, _, p in listeners)
        assert any(metrics_port == p for _, _, p in listeners)
        assert [x for x in listeners if not _loopback(x[1])] == []
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert r.status == 200
        with pytest.raises(ConnectionRefusedError):
            # Another loopback address: reached only by a socket bound to every address.
            socket.create_connection(("127.0.0.2", metrics_port), timeout=10).close()
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


def test_ridgeline_serve_names_why_the_model_failed_to_load(tiny_dir: Path, tmp_path: Path) -> None:
    # It plans (config.json and the safetensors headers are sound) but the replica cannot
    # load its tokenizer: the cause is the replica's exception, which Serve keeps in its status.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "tokenizer.json").write_text("not json")
    manifest = tmp_path / "model.yaml"
    manifest.write_text(MANIFEST.format(uri=f"file://{broken}"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ridgeline.cli",
            "serve",
            str(manifest),
            "--port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        ],
        env={**os.environ, "RIDGELINE_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert (
        "ridgeline serve: local-tiny: the model failed to load:\n"
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
        "  at ridgeline_serving/engine/transformers_engine.py:"
    ) in result.stderr
    assert "AutoTokenizer.from_pretrained" in result.stderr
    assert "Traceback" not in result.stderr


def _listeners(pid: int) -> list[tuple[str, str, int]]:
    """(process, address, port) of every TCP socket listening in ``pid``'s process tree: Ray's
    processes (GCS, raylet, agents, workers) are its children."""
    import psutil

    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that ended meanwhile
        found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # [::ffff:127.0.0.1]
        ip = ip.ipv4_mapped
    return ip.is_loopback
