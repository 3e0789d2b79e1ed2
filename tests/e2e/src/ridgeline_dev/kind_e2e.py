"""The Python half of `make e2e-kind` (tests/e2e/kind-e2e.sh): MinIO in the kind cluster, the
tiny model uploaded through a port-forward, an InferenceModel on the CPU pool, one OpenAI chat
request through a port-forward to the Serve service. Needs Docker and kind; not run in CI."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ridgeline_dev.cluster import free_port
from ridgeline_dev.tiny_model import upload_dir, write_tiny_model

NS = "models"
MINIO = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: models}
spec:
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
      - name: minio
        image: quay.io/minio/minio:latest
        args: [server, /data]
        env:
        - {name: MINIO_ROOT_USER, value: ridgeline}
        - {name: MINIO_ROOT_PASSWORD, value: ridgeline-e2e}
        ports: [{containerPort: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: models}
spec: {selector: {app: minio}, ports: [{port: 9000}]}
---
apiVersion: v1
kind: Secret
metadata: {name: models-s3, namespace: models}
stringData:
  AWS_ACCESS_KEY_ID: ridgeline
  AWS_SECRET_ACCESS_KEY: ridgeline-e2e
  AWS_ENDPOINT_URL: http://minio.models.svc:9000
"""


def kubectl(*args: str, input_: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", *args], input=input_, capture_output=True, text=True, check=True
    ).stdout


@contextmanager
def port_forward(target: str, port: int) -> Iterator[int]:
    local = free_port()
    proc = subprocess.Popen(
        ["kubectl", "-n", NS, "port-forward", target, f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    try:
        yield local
    finally:
        proc.terminate()


def main() -> int:
    from openai import OpenAI

    kubectl("create", "namespace", NS)
    kubectl("apply", "-f", "-", input_=MINIO)
    kubectl("-n", NS, "rollout", "status", "deployment/minio", "--timeout=180s")
    with tempfile.TemporaryDirectory() as tmp, port_forward("svc/minio", 9000) as port:
        model = write_tiny_model(Path(tmp) / "tiny")
        upload_dir(
            model, "models", "tiny-chat", f"http://127.0.0.1:{port}", "ridgeline", "ridgeline-e2e"
        )
    manifest = {
        "apiVersion": "ridgeline.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "tiny-chat", "namespace": NS},
        "spec": {
            "model": {"uri": "s3://models/tiny-chat", "credentialsSecret": "models-s3"},
            "accelerators": ["cpu"],
            "workload": {"maxContextTokens": 512},
        },
    }
    kubectl("apply", "-f", "-", input_=json.dumps(manifest))
    kubectl("-n", NS, "wait", "inferencemodel/tiny-chat", "--for=condition=Ready", "--timeout=900s")
    print(kubectl("-n", NS, "get", "inferencemodels"))
    with port_forward("svc/tiny-chat-serve-svc", 8000) as port:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        answer = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        print("answer:", answer.choices[0].message.content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
