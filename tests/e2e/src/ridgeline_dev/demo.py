"""`make demo`, the main job: a tiny chat model trained on the spot (on the CPU, on the project's
own docs), put in a local object store (MinIO), served by `ridgeline serve` on local Ray, asked
one question with the official openai client. Ends by itself.

Where a model hub is reachable, the same `ridgeline serve` serves a real model from an
``hf://org/name`` URI in the same way; this machine reaches no hub, hence the model trained here.
"""

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
from ridgeline_dev.tiny_model import upload_dir
from ridgeline_dev.trained_model import write_trained_model

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


QUESTION = "How does the planner use the ridge point?"
# The answer's line starts with this, then the answer as a Python string literal (tests read it).
ANSWER_PREFIX = "answer: "


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

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ridgeline-demo-"))
    say(f"training a tiny Llama and its tokenizer on the project's docs, on the CPU, in {work}")
    model_dir = work / "tiny-chat"
    trained = write_trained_model(model_dir)
    print(f"model: {trained.summary()}")
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
            question = QUESTION
            say(f"asking the model (openai client): {question!r}")
            answer = client.chat.completions.create(
                model="tiny-chat",
                messages=[{"role": "user", "content": question}],
                max_tokens=40,
                temperature=0.0,
                # A model this small loops on its favourite phrase; a penalty keeps it moving.
                frequency_penalty=0.8,
            )
            choice = answer.choices[0]
            print(f"({choice.finish_reason}, {answer.usage})")
            print(f"{ANSWER_PREFIX}{choice.message.content!r}")
            print(
                f"(the model: {trained.summary()}; it has read those pages and nothing else, so "
                "it answers in their words, not with sense. Where a model hub is reachable, "
                "`ridgeline serve` serves a real model from an hf:// URI the same way.)"
            )
        finally:
            say("stopping")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"demo finished in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
