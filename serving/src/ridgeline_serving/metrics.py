"""Prometheus metrics, exported through Ray's metrics agent (Ray adds the ``ray_`` prefix, so
``ridgeline_requests`` is scraped as ``ray_ridgeline_requests_total``). Ray Serve's own
replica metrics (``ray_serve_*``) sit beside them on the same endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ray.util.metrics import Counter, Gauge, Histogram

from ridgeline_serving.engine.base import StepStats

PREFIX = "ridgeline_"
LATENCY_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
BATCH: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
TOKENS: list[float] = [1, 16, 64, 256, 512, 1024, 2048, 4096, 8192]
STEP_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
STARTUP_PHASES = ("download", "load", "warmup")


class ServingMetrics:
    def __init__(self, model: str) -> None:
        self.tags = {"model": model}
        keys = ("model",)
        self.requests = Counter(
            f"{PREFIX}requests",
            "HTTP requests by route and status code.",
            tag_keys=("model", "route", "code"),
        )
        self.prompt_tokens = Counter(f"{PREFIX}prompt_tokens", "Prompt tokens.", tag_keys=keys)
        self.completion_tokens = Counter(
            f"{PREFIX}completion_tokens", "Generated tokens.", tag_keys=keys
        )
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds",
            "Time from request to its first token.",
            LATENCY_S,
            tag_keys=keys,
        )
        self.tpot = Histogram(
            f"{PREFIX}time_per_output_token_seconds",
            "Mean time per output token after the first.",
            LATENCY_S,
            tag_keys=keys,
        )
        self.batch_size = Histogram(
            f"{PREFIX}batch_size", "Sequences running, per engine step.", BATCH, tag_keys=keys
        )
        self.prefill_tokens_per_step = Histogram(
            f"{PREFIX}prefill_tokens_per_step",
            "Prompt tokens run in an engine step.",
            TOKENS,
            tag_keys=keys,
        )
        self.decode_tokens_per_step = Histogram(
            f"{PREFIX}decode_tokens_per_step",
            "Sequences decoded in an engine step.",
            BATCH,
            tag_keys=keys,
        )
        self.step_seconds = Histogram(
            f"{PREFIX}engine_step_seconds", "Engine step time.", STEP_S, tag_keys=keys
        )
        self.preemptions = Counter(
            f"{PREFIX}preemptions", "Running sequences evicted for memory.", tag_keys=keys
        )
        self.running = Gauge(f"{PREFIX}running_sequences", "Sequences in the batch.", tag_keys=keys)
        self.waiting = Gauge(
            f"{PREFIX}waiting_sequences", "Sequences waiting to join the batch.", tag_keys=keys
        )
        self.kv_used = Gauge(
            f"{PREFIX}kv_cache_tokens", "Tokens held in the KV cache.", tag_keys=keys
        )
        self.kv_planned = Gauge(
            f"{PREFIX}kv_cache_planned_tokens",
            "KV-cache tokens the plan reserves (maxBatchByMemory x context).",
            tag_keys=keys,
        )
        self.startup_seconds = Gauge(
            f"{PREFIX}replica_startup_seconds",
            "Replica start-up time by phase (download: getting the weights, from the store or "
            "the node cache; load; warmup), and where the weights came from (source: "
            "node_cache or download).",
            tag_keys=("model", "phase", "source"),
        )
        self.startup_source = "download"  # set once the weights are in
        self.batch_target = Gauge(
            f"{PREFIX}batch_target", "The planned batch target.", tag_keys=keys
        )
        self.queue_depth = Gauge(
            f"{PREFIX}queue_depth", "Requests in this replica, waiting or decoding.", tag_keys=keys
        )
        self.load_seconds = Gauge(
            f"{PREFIX}weight_load_seconds", "Seconds to fetch and load the weights.", tag_keys=keys
        )
        self.load_bytes = Gauge(
            f"{PREFIX}weight_load_bytes", "Bytes of weights fetched.", tag_keys=keys
        )
        self.cache_read_bytes = Gauge(
            f"{PREFIX}weight_cache_read_bytes",
            "Bytes of weights read from the node weight cache (0: downloaded).",
            tag_keys=keys,
        )
        self.download_gbps = Gauge(
            f"{PREFIX}weight_download_gigabytes_per_second",
            "Object-store download throughput.",
            tag_keys=keys,
        )

    def refresh_gauges(self, values: Callable[[], dict[str, float]], period_s: float = 1.0) -> None:
        """Re-record the gauges every period: Ray's OpenTelemetry exporter drops a gauge that
        was not recorded since the last export, so a value set once would vanish."""
        gauges = {
            "batch_target": self.batch_target,
            "queue_depth": self.queue_depth,
            "weight_load_seconds": self.load_seconds,
            "weight_load_bytes": self.load_bytes,
            "weight_download_gigabytes_per_second": self.download_gbps,
            "weight_cache_read_bytes": self.cache_read_bytes,
            "running_sequences": self.running,
            "waiting_sequences": self.waiting,
            "kv_cache_tokens": self.kv_used,
            "kv_cache_planned_tokens": self.kv_planned,
        }

        def loop() -> None:
            while not self._stop.wait(period_s):
                for name, value in values().items():
                    if name.startswith("startup_"):
                        phase = name.removeprefix("startup_")
                        tags = {**self.tags, "phase": phase, "source": self.startup_source}
                        self.startup_seconds.set(value, tags)
                    else:
                        gauges[name].set(value, self.tags)

        self._stop = threading.Event()
        threading.Thread(target=loop, name="ridgeline-gauges", daemon=True).start()

    def step(self, stats: StepStats) -> None:
        """One engine step (called from the engine's thread)."""
        if stats.running:
            self.batch_size.observe(stats.running, self.tags)
        self.prefill_tokens_per_step.observe(stats.prefill_tokens, self.tags)
        self.decode_tokens_per_step.observe(stats.decode_tokens, self.tags)
        self.step_seconds.observe(stats.seconds, self.tags)

    def request(self, route: str, code: int) -> None:
        """One answered request: its HTTP code, or 499 when the client left first."""
        self.requests.inc(1, {**self.tags, "route": route, "code": str(code)})

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds, self.tags)

    def tokens(self, prompt: int, completion: int, per_token_s: float | None) -> None:
        """A finished request's tokens, and its mean time per output token after the first."""
        self.prompt_tokens.inc(prompt, self.tags)
        if completion:
            self.completion_tokens.inc(completion, self.tags)
        if per_token_s is not None:
            self.tpot.observe(per_token_s, self.tags)
