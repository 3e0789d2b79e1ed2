"""``ridgeline serve MODEL.yaml``: plan for this machine, start Ray locally, serve until ^C."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ridgeline.api import InferenceModel
from ridgeline.api.plan import Plan
from ridgeline.api.serving_args import ServingArgs
from ridgeline.hardware import GIB, MIB
from ridgeline.planner import NodePool, plan_model
from ridgeline.planner.report import plan_text
from ridgeline.render import serving_args_for
from ridgeline.shape.reader import read_model_shape
from ridgeline.storage import open_store
from ridgeline.storage.download import DownloadStats, download_model
from ridgeline.storage.progress import human_bytes
from ridgeline_serving.loopback import is_loopback, keep_ray_on_loopback, metrics_host

LOCAL_POOL = "local"


def local_pool() -> NodePool:
    """This machine as a node pool: its GPUs if torch sees any, else its CPU and memory."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return NodePool(
                name=LOCAL_POOL,
                gpu_product=props.name.replace(" ", "-"),
                gpus_per_node=torch.cuda.device_count(),
                gpu_memory_mib=props.total_memory // MIB,
            )
    except ImportError:
        pass
    return local_cpu_pool()


def local_cpu_pool() -> NodePool:
    """This machine's CPU and memory as a node pool."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return NodePool(
        name=LOCAL_POOL,
        gpu_product="cpu",
        gpus_per_node=0,
        memory_gib=memory / GIB,
        cpus=os.cpu_count() or 1,
    )


def default_cache_dir() -> Path:
    """Where `ridgeline serve` keeps weights: $RIDGELINE_CACHE_DIR, else ~/.cache/ridgeline."""
    env = os.environ.get("RIDGELINE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ridgeline" / "models"


def local_plan(model: InferenceModel, model_uri: str | None = None) -> tuple[InferenceModel, Plan]:
    """The same plan the operator would make, for a pool that is this machine; the model as
    served here (this machine's accelerator, ``model_uri`` where given)."""
    pool = local_pool()
    spec = model.spec.model_copy(update={"accelerators": [pool.gpu_product]})
    uri = model_uri or spec.model.uri
    plan = plan_model(read_model_shape(uri), spec, [pool])
    local = model.model_copy(
        update={
            "spec": spec.model_copy(update={"model": spec.model.model_copy(update={"uri": uri})})
        }
    )
    return local, plan


def serving_args(
    model: InferenceModel, model_uri: str | None = None, cache_dir: Path | None = None
) -> tuple[ServingArgs, str]:
    """The replica's arguments for the local plan, and the plan in words."""
    local, plan = local_plan(model, model_uri)
    args = serving_args_for(local, plan, str(cache_dir or default_cache_dir()))
    return args, plan_text(model.metadata.name, plan)


def fetch_weights(args: ServingArgs) -> DownloadStats:
    """Pull the weights into the cache here, before Ray starts: a replica's output does not
    reach this terminal, so the download would be minutes of silence. Progress is a redrawn
    line on a terminal and a line every 10 s or 10% otherwise; the replica then finds the
    cache complete and loads from it."""
    print(f"weights: {args.model_uri} -> {args.cache_dir}", flush=True)
    stats = download_model(
        open_store(args.model_uri),
        Path(args.cache_dir).expanduser(),
        manifest_key=args.sha256_manifest,
        parallel=args.download_parallelism,
    )
    if stats.reused:
        print(f"weights: cached copy is current ({human_bytes(stats.bytes_total)})", flush=True)
    else:
        print(
            f"weights: {human_bytes(stats.bytes_downloaded)} in {stats.seconds:.1f} s "
            f"({human_bytes(stats.bytes_downloaded / max(stats.seconds, 1e-9))}/s)",
            flush=True,
        )
    return stats


class LoadError(RuntimeError):
    """The replica could not load the model; the message holds the replica's exception."""


def serve_forever(
    model: InferenceModel,
    host: str,
    port: int,
    metrics_port: int,
    model_uri: str | None = None,
    ready: threading.Event | None = None,
) -> int:
    args, explanation = serving_args(model, model_uri)
    print(explanation, flush=True)
    print()
    fetch_weights(args)
    print(f"starting Ray and loading {args.model_uri} ...", flush=True)
    runtime_env = keep_ray_on_loopback() if is_loopback(host) else None
    from ridgeline_serving.proxy_limits import proxy_env

    # Serve's proxy with the serving image's head limits and the bound on a cold start's wait
    os.environ.update(proxy_env(args.cold_start_wait_s, args.predicted_cold_start_s))
    import ray
    from ray import serve

    from ridgeline_serving.app import build_app
    from ridgeline_serving.deploy_failure import failure_cause

    started = time.monotonic()
    ray.init(
        include_dashboard=False,
        _metrics_export_port=metrics_port,
        logging_level=logging.WARNING,
        log_to_driver=False,
        runtime_env=runtime_env,
    )
    try:
        serve.start(
            http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"}
        )
        try:
            app = build_app(args.model_dump(mode="json"))
            serve.run(app, name=args.model_name, route_prefix="/")
        except RuntimeError as exc:  # DEPLOY_FAILED: serve.run names only the deployment
            cause = failure_cause(args.model_name) or str(exc)
            raise LoadError(f"the model failed to load:\n{cause}") from exc
        print(f"\n{args.model_name} is ready after {time.monotonic() - started:.1f} s", flush=True)
        print(f"  OpenAI endpoint: http://{host}:{port}/v1   (model name: {args.model_name})")
        print(f"  metrics:         http://{metrics_host(host)}:{metrics_port}/metrics")
        print("  Ctrl-C stops it.", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if ready is not None:
            ready.set()
        stop.wait()
    except KeyboardInterrupt:
        pass  # Ctrl-C while the replica was still starting: stop just the same
    finally:
        print("stopping ...", file=sys.stderr, flush=True)
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    return 0
