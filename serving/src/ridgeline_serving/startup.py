"""A replica's start: pull the weights into the node cache, load them, run one warm-up step,
and say how long each part took."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ridgeline.api.serving_args import ServingArgs
from ridgeline.storage import open_store
from ridgeline.storage.download import download_model
from ridgeline_serving.engine import Engine, GenerationRequest, StepStats

StepHook = Callable[[StepStats], None]


@dataclass(frozen=True)
class StartupTimes:
    """Where a replica's start-up went: pulling the weights, loading them, the first step."""

    download_s: float = 0.0
    load_s: float = 0.0
    warmup_s: float = 0.0
    bytes: int = 0
    gb_per_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.download_s + self.load_s + self.warmup_s


def load_engine(args: ServingArgs, on_step: StepHook | None = None) -> tuple[Engine, StartupTimes]:
    """Pull the weights into the node cache, load them, run one warm-up step."""
    from ridgeline_serving.engine.transformers_engine import TransformersEngine

    began = time.monotonic()
    stats = download_model(
        open_store(args.model_uri),
        Path(args.cache_dir).expanduser(),
        manifest_key=args.sha256_manifest,
        parallel=args.download_parallelism,
    )
    downloaded = time.monotonic()
    engine = TransformersEngine(
        stats.path,
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
        stats.bytes_downloaded,
        stats.gb_per_s,
    )
    return engine, times
