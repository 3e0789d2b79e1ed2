"""The HTTP routes of one ``OpenAIServer``, as a FastAPI app (built per replica: Serve's
``__serve_build_asgi_app__``, or a test's ASGI client)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ridgeline_serving.api_server import OpenAIServer


def build_api(server: OpenAIServer) -> FastAPI:
    api = FastAPI(title="Ridgeline", docs_url=None, redoc_url=None)

    @api.get("/health")
    async def health() -> JSONResponse:
        return server.health_answer()

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return server.models()

    @api.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await server.handle("/v1/completions", request, chat=False)

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await server.handle("/v1/chat/completions", request, chat=True)

    return api
