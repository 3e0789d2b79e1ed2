"""The Ray Serve application: ``build_app(args)`` -> one deployment whose replicas each pull the
weights at start, load them, and serve the OpenAI-compatible API (``api_server.py``, routes in
``routes.py``) over their engine, which batches continuously up to the planned batch
(``engine/scheduler.py``); Ray Serve routes and autoscales replicas and does no batching of
its own. Serve's ``check_health`` asks ``health.py`` whether the engine can still step, so a
replica with a broken device or a stalled engine is replaced.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from ridgeline.api.serving_args import ServingArgs, deployment_options
from ridgeline_serving.api_server import OpenAIServer
from ridgeline_serving.engine import Engine, EngineStats, StepStats
from ridgeline_serving.engine_log import EngineLog
from ridgeline_serving.health import EngineHealth, stall_bound
from ridgeline_serving.logs import configure_replica_logging
from ridgeline_serving.metrics import ServingMetrics
from ridgeline_serving.routes import build_api
from ridgeline_serving.startup import load_engine

log = logging.getLogger("ridgeline.serving")


@serve.deployment(name="model", max_ongoing_requests=4096, health_check_period_s=10)
@serve.ingress()
class ModelServer:
    def __init__(self, args: dict[str, Any]) -> None:
        configure_replica_logging()
        self.args = ServingArgs.model_validate(args)
        self.metrics = ServingMetrics(self.args.model_name)
        self.engine_log: EngineLog | None = None  # made after the warm-up, which it leaves out
        self.health: EngineHealth | None = None  # fed from the first served step on
        # self.weights holds the node cache's version in use while the replica lives.
        engine, self.startup, self.weights = load_engine(self.args, self._on_step)
        log.info(
            "replica ready in %.1f s: weights from %s in %.1f s (%d bytes from the store at "
            "%.2f GB/s, %d from the node cache), load %.1f s, warm-up %.1f s%s",
            self.startup.total_s,
            self.startup.source,
            self.startup.download_s,
            self.startup.bytes,
            self.startup.gb_per_s,
            self.startup.cache_bytes,
            self.startup.load_s,
            self.startup.warmup_s,
            ""
            if self.startup.ray_start_s is None
            else f"; {self.startup.ray_start_s:.1f} s from the container's start before it",
        )
        self.metrics.startup_source = self.startup.source
        self.engine: Engine = engine
        self.health = EngineHealth(stall_bound(self.args.planned_step_seconds), engine.submit)
        self.server = OpenAIServer(self.args, engine, self.metrics, self.health)
        self.preemptions = 0
        if self.args.engine_log_interval_s > 0:
            self.engine_log = EngineLog(
                self.args.max_batch_size,
                self.args.planned_step_seconds,
                self.args.engine_log_interval_s,
            )
        self.metrics.refresh_gauges(self._each_second)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.server)

    async def check_health(self) -> None:
        """Serve's periodic check: raising marks the replica unhealthy, and Serve replaces it."""
        assert self.health is not None
        broken = self.health.check()
        if broken is not None:
            log.error("replica unhealthy: %s", broken)
            raise RuntimeError(broken)

    def _on_step(self, stats: StepStats) -> None:
        """One engine step (the engine's thread)."""
        self.metrics.step(stats)
        if self.health is not None:
            self.health.stepped(stats)
        if self.engine_log is not None:
            self.engine_log.step(stats)

    def _each_second(self) -> dict[str, float]:
        """The gauge thread's tick: the engine's log line when one is due, and the gauges."""
        stats = self.engine.stats()
        self._log_engine(stats)
        return self._gauges(stats)

    def _log_engine(self, stats: EngineStats) -> None:
        if self.engine_log is not None and (line := self.engine_log.line(stats)) is not None:
            log.info("%s", line)

    def _gauges(self, stats: EngineStats) -> dict[str, float]:
        if stats.preemptions > self.preemptions:
            self.metrics.preemptions.inc(stats.preemptions - self.preemptions, self.metrics.tags)
            self.preemptions = stats.preemptions
        return {
            "batch_target": self.args.max_batch_size,
            "queue_depth": self.server.inflight,
            "running_sequences": stats.running,
            "waiting_sequences": stats.waiting,
            "kv_cache_tokens": stats.kv_tokens_used,
            "kv_cache_planned_tokens": stats.kv_tokens_planned,
            "weight_load_seconds": self.startup.download_s + self.startup.load_s,
            "weight_load_bytes": self.startup.bytes,
            "weight_download_gigabytes_per_second": self.startup.gb_per_s,
            "weight_cache_read_bytes": self.startup.cache_bytes,
            "startup_download": self.startup.download_s,
            "startup_load": self.startup.load_s,
            "startup_warmup": self.startup.warmup_s,
            **(
                {"startup_ray_start": self.startup.ray_start_s}
                if self.startup.ray_start_s is not None
                else {}
            ),
        }


def build_app(args: dict[str, Any]) -> serve.Application:
    """The app builder that ``serveConfigV2`` names: ``ridgeline_serving.app:build_app``."""
    parsed = ServingArgs.model_validate(args)
    # The options the cluster's render gives the deployment (``deployment_options``), less the
    # cluster's own: one replica per worker pod, the router's bound, drain and autoscaling.
    app: serve.Application = ModelServer.options(  # type: ignore[attr-defined]
        **deployment_options(parsed)
    ).bind(parsed.model_dump(mode="json"))
    return app
