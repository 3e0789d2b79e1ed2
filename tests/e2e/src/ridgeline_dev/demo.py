"""`make demo`, the main job: a tiny chat model made on the spot, put in a local object store
(MinIO), served by `ridgeline serve` on local Ray, asked one question with the official openai
client. Ends by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ridgeline_dev.cluster import free_port
from ridgeline_dev.s3server import running_minio
from ridgeline_dev.tiny_model import upload_dir, write_tiny_model

MODEL_YAML = """\
apiVersion: ridgeline.dev/v1alpha1
kind: InferenceModel
metadata: {{name: tiny-chat, namespace: default}}
spec:
  model: {{uri: "{uri}"}}
  quantization: none
  workload: {{mode: online, maxContextTokens: 1024}}
  accelerators: [cpu]
  replicas: {{min: 1, max: 1}}
"""


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ridgeline serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def main() -> int:
    from openai import OpenAI

    work = Path(tempfile.mkdtemp(prefix="ridgeline-demo-"))
    say(f"building a tiny Llama and training its tokenizer in {work}")
    model_dir = write_tiny_model(work / "tiny-chat")
    say("starting a local S3 object store (MinIO on 127.0.0.1)")
    with running_minio(work / "minio") as s3:
        uri = upload_dir(
            model_dir, "models", "tiny-chat", s3.endpoint, s3.access_key, s3.secret_key
        )
        print(f"uploaded to {uri}")
        manifest = work / "model.yaml"
        manifest.write_text(MODEL_YAML.format(uri=uri))
        print(manifest.read_text())
        port, metrics = free_port(), free_port()
        say(f"ridgeline serve {manifest.name} --port {port}")
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
                str(metrics),
            ],
            env={**os.environ, **s3.env(), "RIDGELINE_CACHE_DIR": str(work / "cache")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        out = proc.stdout

        serving = threading.Event()

        def relay() -> None:
            for line in iter(out.readline, b""):
                text = line.decode(errors="replace")
                sys.stdout.write("   | " + text)
                sys.stdout.flush()
                if " is ready after " in text:
                    serving.set()

        threading.Thread(target=relay, daemon=True).start()
        try:
            wait_ready(f"http://127.0.0.1:{port}/v1/models", proc, 300)
            serving.wait(60)  # `ridgeline serve` has printed its endpoint
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            question = "hello, what does the ridge point say about batch size?"
            say(f"asking the model (openai client): {question!r}")
            answer = client.chat.completions.create(
                model="tiny-chat",
                messages=[{"role": "user", "content": question}],
                max_tokens=24,
                temperature=0.7,
                seed=0,
            )
            choice = answer.choices[0]
            print(f"answer ({choice.finish_reason}, {answer.usage}):\n  {choice.message.content!r}")
            print(
                "(random weights: the words are noise; the path from object store to API is real)"
            )
        finally:
            say("stopping")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
