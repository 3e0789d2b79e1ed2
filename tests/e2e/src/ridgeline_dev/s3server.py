"""MinIO on loopback, alone (the serving tests and `make demo`) or inside the control plane."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ridgeline_dev.toolchain import MODULES, build


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The variables boto3 (and so Ridgeline's storage layer) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


def minio_binary() -> Path:
    return build(next(m for m in MODULES if m.name == "minio")) / "minio"


def minio_argv(data: Path, port: int, console_port: int) -> list[str]:
    return [
        str(minio_binary()),
        "server",
        str(data),
        "--quiet",
        "--address",
        f"127.0.0.1:{port}",
        "--console-address",
        f"127.0.0.1:{console_port}",
    ]


def minio_env(access_key: str, secret_key: str) -> dict[str, str]:
    return {
        **os.environ,
        "MINIO_ROOT_USER": access_key,
        "MINIO_ROOT_PASSWORD": secret_key,
        "MINIO_BROWSER": "off",
    }


def ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_minio(workdir: Path) -> Iterator[S3Server]:
    from ridgeline_dev.cluster import free_port

    port, console = free_port(), free_port()
    server = S3Server(f"http://127.0.0.1:{port}", "ridgeline", secrets.token_hex(12))
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    log = (workdir / "minio.log").open("ab")
    proc = subprocess.Popen(
        minio_argv(workdir / "data", port, console),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=minio_env(server.access_key, server.secret_key),
    )
    try:
        deadline = time.monotonic() + 60
        while not ready(server.endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"minio did not start: {(workdir / 'minio.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
