"""Serving benchmarks on this machine (CPU): weight loading from a local S3 server, API
overhead per request, tokens/s against batch size. Prints figures and ratios and writes them
to docs/benchmarks.md (section "Serving, CPU")."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_report import write_section

WEIGHT_MB = int(os.environ.get("BENCH_WEIGHT_MB", "768"))
CAP_MB_S = 100


class _Capped:
    """A store whose every ranged stream is throttled to CAP_MB_S."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.root_uri = inner.root_uri

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def iter_range(self, key, start, length, if_version=None):  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        sent = 0
        for chunk in self.inner.iter_range(key, start, length, if_version):
            sent += len(chunk)
            ahead = sent / (CAP_MB_S * 1e6) - (time.perf_counter() - began)
            if ahead > 0:
                time.sleep(ahead)
            yield chunk


def bench_weight_loading(work: Path) -> list[str]:
    import boto3

    from ridgeline.storage import open_store
    from ridgeline.storage.download import download_model
    from ridgeline_dev.s3server import running_minio

    lines = []
    with running_minio(work / "minio") as s3:
        os.environ.update(s3.env())
        client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="bench")
        blob = work / "model.safetensors"
        with blob.open("wb") as fh:
            for _ in range(WEIGHT_MB):
                fh.write(os.urandom(2**20))
        (work / "config.json").write_text("{}")
        for name in ("model.safetensors", "config.json"):
            client.upload_file(str(work / name), "bench", f"m/{name}")
        size = blob.stat().st_size

        def timed(fn) -> float:  # type: ignore[no-untyped-def]
            # Earlier copies are dropped and flushed first: dirty pages left by one run would
            # throttle the next one's writes and make the order of the rows matter.
            for old in work.glob("cache-*"):
                shutil.rmtree(old)
            for old in work.glob("capped-*"):
                shutil.rmtree(old)
            (work / "single.bin").unlink(missing_ok=True)
            os.sync()
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        def single_stream() -> None:
            body = client.get_object(Bucket="bench", Key="m/model.safetensors")["Body"]
            with (work / "single.bin").open("wb") as out:
                for chunk in iter(lambda: body.read(8 * 2**20), b""):
                    out.write(chunk)

        def ridgeline(parallel: int) -> float:
            cache = work / f"cache-{parallel}"
            return timed(
                lambda: download_model(
                    open_store("s3://bench/m"), cache, parallel=parallel, progress=False
                )
            )

        def local_read() -> None:
            with blob.open("rb") as fh:
                while fh.read(8 * 2**20):
                    pass

        single = min(timed(single_stream) for _ in range(2))
        par = {p: ridgeline(p) for p in (1, 4, 8)}
        local = min(timed(local_read) for _ in range(2))

        def md5_pass() -> None:
            import hashlib

            h = hashlib.md5()
            with blob.open("rb") as fh:
                for chunk in iter(lambda: fh.read(8 * 2**20), b""):
                    h.update(chunk)

        md5 = min(timed(md5_pass) for _ in range(2))
        gb = size / 1e9
        lines.append(
            f"Object: {gb:.2f} GB of random bytes in MinIO on 127.0.0.1 (2 cores shared by client and server)."
        )
        lines.append("")
        lines.append("| method | seconds | GB/s | vs single stream |")
        lines.append("|---|---|---|---|")
        lines.append(f"| boto3 single GET stream | {single:.2f} | {gb / single:.2f} | 1.00x |")
        for p, t in par.items():
            lines.append(
                f"| ridgeline download_model, {p} parallel 32 MiB ranged parts, ETag-conditional | {t:.2f} | {gb / t:.2f} | {single / t:.2f}x |"
            )
        lines.append(
            f"| read of a local copy (page cache) | {local:.2f} | {gb / local:.2f} | {single / local:.2f}x |"
        )
        lines.append(
            f"| md5 of the file alone (a pass Ridgeline does not make; see download.py) | {md5:.2f} | {gb / md5:.2f} | |"
        )
        lines += [
            "",
            f"With each connection capped at {CAP_MB_S} MB/s, as one S3 request is in practice "
            "(the cap is simulated in the client; the bytes still come from MinIO):",
            "",
            "| method | seconds | GB/s | vs one capped stream |",
            "|---|---|---|---|",
        ]
        capped = {
            p: timed(
                lambda p=p: download_model(
                    _Capped(open_store("s3://bench/m")),
                    work / f"capped-{p}",
                    parallel=p,
                    progress=False,
                )
            )
            for p in (1, 4, 8)
        }
        for p, t in capped.items():
            lines.append(
                f"| ridgeline download_model, {p} parallel | {t:.2f} | {gb / t:.2f} | {capped[1] / t:.2f}x |"
            )
    return lines


def bench_engine_and_api(work: Path) -> list[str]:
    import httpx
    import torch

    from ridgeline.api import Quantization
    from ridgeline_dev.cluster import free_port
    from ridgeline_dev.tiny_model import write_tiny_model
    from ridgeline_serving.engine import GenerationRequest
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    # One intra-op thread: two spin against each other on a loaded 2-core machine (a Ray
    # replica gets OMP_NUM_THREADS from its num_cpus the same way).
    torch.set_num_threads(1)
    model_dir = write_tiny_model(work / "tiny")
    engine = TransformersEngine(model_dir, "tiny", Quantization.NONE, "float32", 0, 512)
    prompt = engine.encode_prompt("the model serves tokens")
    lines = [
        "Tokens/s against batch size, tiny Llama (2 layers, hidden 64), float32, 32 new tokens each, one intra-op thread (all requests submitted at once to the continuous-batching engine):",
        "",
        "| batch | seconds | tokens/s | vs batch 1 |",
        "|---|---|---|---|",
    ]
    base = None
    for batch in (1, 2, 4, 8, 16, 32, 64):
        reqs = [GenerationRequest(prompt, 32, temperature=0) for _ in range(batch)]
        engine.generate(reqs)  # warm
        t = min(_time(lambda reqs=reqs: engine.generate(reqs)) for _ in range(3))
        tps = batch * 32 / t
        base = base or tps
        lines.append(f"| {batch} | {t:.3f} | {tps:.0f} | {tps / base:.1f}x |")

    lines += [
        "",
        "Continuous batching against transformers' `ContinuousBatchingManager`: see "
        '"Serving engine, CPU".',
        "",
    ]

    # API overhead: one token through HTTP + Ray Serve vs the engine alone
    import ray
    from ray import serve

    from ridgeline_serving.app import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(
            {
                "model_uri": str(model_dir),
                "model_name": "tiny",
                "compute_dtype": "float32",
                "max_batch_size": 8,
                "max_context_tokens": 512,
                "gpus_per_replica": 0,
                "cache_dir": str(work / "cache"),
            }
        ),
        name="b",
        route_prefix="/",
    )
    url = f"http://127.0.0.1:{port}/v1/completions"
    body = {"model": "tiny", "prompt": "the model serves tokens", "max_tokens": 1, "temperature": 0}
    with httpx.Client() as http:
        for _ in range(5):
            http.post(url, json=body)
        api = statistics.median(_time(lambda: http.post(url, json=body)) for _ in range(40))
    one = [GenerationRequest(prompt, 1, temperature=0)]
    direct = statistics.median(_time(lambda: engine.generate(one)) for _ in range(40))
    serve.shutdown()
    ray.shutdown()
    engine.close()
    lines += [
        "",
        "API overhead per request (median of 40, 1 output token):",
        "",
        f"- engine alone: {direct * 1000:.1f} ms; through HTTP + Ray Serve proxy + replica + engine loop: "
        f"{api * 1000:.1f} ms; overhead {1000 * (api - direct):.1f} ms ({api / direct:.1f}x)",
    ]
    return lines


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ridgeline-bench-") as tmp:
        work = Path(tmp)
        lines = [
            "### Weight loading from a local S3 server",
            "",
            *bench_weight_loading(work),
            "",
            "### Engine and API (CPU)",
            "",
            *bench_engine_and_api(work),
        ]
    text = "\n".join(lines)
    print(text)
    write_section("Serving, CPU", text)


if __name__ == "__main__":
    main()
