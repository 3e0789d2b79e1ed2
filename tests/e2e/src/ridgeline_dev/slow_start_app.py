"""The serving app scaled to zero, whose replica takes ``START_DELAY_S`` longer to start: for
the test that a request waiting on a cold start gets a 503 with Retry-After past the bound the
proxy holds, and a later one its answer."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from ridgeline.api.serving_args import ServingArgs, deployment_options
from ridgeline_serving.app import ModelServer

# Longer than the test's wait bound, so the first request cannot be answered within it.
START_DELAY_S = 6.0


@serve.deployment(name="model", max_ongoing_requests=4096, health_check_period_s=10)
class SlowStartServer(ModelServer.func_or_class):  # type: ignore[misc,name-defined]
    # async: Serve's ingress makes the parent's __init__ a coroutine
    async def __init__(self, args: dict[str, Any]) -> None:  # type: ignore[misc]
        await asyncio.sleep(START_DELAY_S)  # an image pull and a weight download stand-in
        await super().__init__(args)


def build_app(args: dict[str, Any]) -> serve.Application:
    parsed = ServingArgs.model_validate(args)
    app: serve.Application = SlowStartServer.options(
        **deployment_options(parsed),
        autoscaling_config={
            "min_replicas": 0,
            "initial_replicas": 0,  # no replica until a request comes
            "max_replicas": 1,
            "target_ongoing_requests": 1,
            # the replica the first request asked for keeps starting after that request's
            # 503, and stays for the next one
            "downscale_delay_s": 600,
            "downscale_to_zero_delay_s": 600,
        },
    ).bind(parsed.model_dump(mode="json"))
    return app
