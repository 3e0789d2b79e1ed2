"""A replica's start: the weights from the node cache or the store (``weights.py``), loaded, one
warm-up step, and how long each part took."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ridgeline.api.serving_args import ServingArgs
from ridgeline_serving.engine import Engine, GenerationRequest, StepStats
from ridgeline_serving.weights import Weights, fetch_weights

StepHook = Callable[[StepStats], None]


@dataclass(frozen=True)
class StartupTimes:
    """Where a replica's start-up went: getting the weights (a download, or the node cache's
    check), loading them, the first step."""

    download_s: float = 0.0
    load_s: float = 0.0
    warmup_s: float = 0.0
    bytes: int = 0  # fetched from the object store
    gb_per_s: float = 0.0
    source: str = "download"  # or "node_cache"
    cache_bytes: int = 0  # read from the node cache
    # From the container's start to the replica's (Ray joining, Serve placing the replica);
    # None outside a pod.
    ray_start_s: float | None = None

    @property
    def total_s(self) -> float:
        return self.download_s + self.load_s + self.warmup_s


def container_age_s(
    proc: Path = Path("/proc"), env: Mapping[str, str] = os.environ
) -> float | None:
    """Seconds since this container's first process (PID 1 of its PID namespace) started: in a
    pod, the start of the container (or of the pod's sandbox, with a shared PID namespace).
    None outside a pod, where PID 1 is the machine's init."""
    if "KUBERNETES_SERVICE_HOST" not in env:
        return None
    try:
        # The command name (field 2) may hold spaces: fields after its ")" start at field 3,
        # and starttime, in clock ticks since boot, is field 22.
        fields = (proc / "1" / "stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[22 - 3]) / os.sysconf("SC_CLK_TCK")
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)


def load_engine(
    args: ServingArgs, on_step: StepHook | None = None
) -> tuple[Engine, StartupTimes, Weights]:
    """Get the weights, load them, run one warm-up step. The returned ``Weights`` holds the
    node cache's version in use: the caller keeps it for the replica's life."""
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    ray_start = container_age_s()
    began = time.monotonic()
    weights = fetch_weights(args)
    downloaded = time.monotonic()
    engine = TransformersEngine(
        weights.path,
        args.model_name,
        args.quantization,
        args.compute_dtype,
        args.gpus_per_replica,
        args.max_context_tokens,
        max_batch=args.max_batch_size,
        kv_tokens=args.kv_sequences * args.max_context_tokens,
        prefill_tokens=args.prefill_chunk_tokens,
        usable_memory_fraction=args.usable_memory_fraction,
        on_step=on_step,
    )
    loaded = time.monotonic()
    engine.generate([GenerationRequest(engine.encode_prompt("warm up"), 2, temperature=0)])
    times = StartupTimes(
        downloaded - began,
        loaded - downloaded,
        time.monotonic() - loaded,
        weights.bytes_downloaded,
        weights.gb_per_s,
        weights.source,
        weights.bytes_from_cache,
        ray_start,
    )
    return engine, times, weights
