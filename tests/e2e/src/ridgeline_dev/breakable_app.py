"""The serving app with one more route, ``POST /test/break``, that makes every forward of its
replica's model fail from then on, as a sticky device error does (after an illegal memory
access every CUDA call fails): for the test that sees Serve replace a replica whose engine
broke."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve

from ridgeline.api.serving_args import ServingArgs, deployment_options
from ridgeline_serving.app import ModelServer

FAULT = "RuntimeError: CUDA error: an illegal memory access was encountered (injected)"


def _broken_forward(module: Any, args: Any) -> None:
    raise RuntimeError(FAULT)


@serve.deployment(name="model", max_ongoing_requests=4096, health_check_period_s=2)
class BreakableServer(ModelServer.func_or_class):  # type: ignore[misc,name-defined]
    def __serve_build_asgi_app__(self) -> FastAPI:
        api: FastAPI = super().__serve_build_asgi_app__()

        @api.post("/test/break")
        async def break_engine() -> dict[str, str]:
            # the engine catches what a forward raises, fails those sequences, and goes on
            self.engine.scheduler.runner.model.register_forward_pre_hook(_broken_forward)
            return {"broken": FAULT}

        return api


def build_app(args: dict[str, Any]) -> serve.Application:
    parsed = ServingArgs.model_validate(args)
    app: serve.Application = BreakableServer.options(**deployment_options(parsed)).bind(
        parsed.model_dump(mode="json")
    )
    return app
