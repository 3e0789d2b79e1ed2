"""A replica's start: the weights from the node cache or the store (``weights.py``), loaded, one
warm-up step, and how long each part took."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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

    @property
    def total_s(self) -> float:
        return self.download_s + self.load_s + self.warmup_s


def load_engine(
    args: ServingArgs, on_step: StepHook | None = None
) -> tuple[Engine, StartupTimes, Weights]:
    """Get the weights, load them, run one warm-up step. The returned ``Weights`` holds the
    node cache's version in use: the caller keeps it for the replica's life."""
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

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
    )
    return engine, times, weights
