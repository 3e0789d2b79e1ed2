"""What one HTTP request may cost a replica before the engine sees it.

Ray Serve's proxy hands a request to the replica as soon as its headers arrive and relays the
body as the replica reads it (``proxy.py``: ``receive_asgi_messages``), so a request holds a
replica slot (``max_ongoing_requests``) from its first byte. Its ``request_timeout_s`` is
end-to-end and would also cut long generations, so the replica bounds the body itself:

- the body's size: at most ``max_body_bytes`` (a ``Content-Length`` above it is refused before
  a byte is read; a chunked body is cut off where it passes it): 413;
- the body's time: all of it within ``body_timeout_s`` of the request's arrival: 408;
- the prompt's size before it is tokenized: a prompt that fits ``max_context_tokens`` has at
  most ``MAX_CHARS_PER_TOKEN`` characters per token, so a longer one is refused (400) without
  spending the tokenizer's time and memory on it.

The limits follow from the context; only the body timeout is a ``ServingArgs`` field.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from ridgeline_serving.openai_api import ApiError

# Byte-level BPE vocabularies (GPT-2, Llama 3, Qwen 2) average about 4 characters of English
# per token; their longest entries (runs of spaces, code indentation) stay far below a prompt
# that averages 32, so a prompt longer than this cannot fit the context.
MAX_CHARS_PER_TOKEN = 32
# A character in a JSON string is at most 6 bytes on the wire (a \uXXXX escape).
JSON_BYTES_PER_CHAR = 6
# The rest of a request: parameters, chat roles, stop strings, a token-id prompt.
BODY_SLACK_BYTES = 1 << 20


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int
    max_prompt_chars: int
    body_timeout_s: float

    @classmethod
    def for_context(cls, max_context_tokens: int, body_timeout_s: float) -> RequestLimits:
        chars = max_context_tokens * MAX_CHARS_PER_TOKEN
        return cls(chars * JSON_BYTES_PER_CHAR + BODY_SLACK_BYTES, chars, body_timeout_s)

    def check_prompt(self, chars: int, param: str) -> None:
        if chars > self.max_prompt_chars:
            raise ApiError(
                400,
                f"the prompt is {chars} characters; this model's context holds at most "
                f"{self.max_prompt_chars} ({MAX_CHARS_PER_TOKEN} per token)",
                param=param,
                code="context_length_exceeded",
            )


def _too_large(limits: RequestLimits, size: str) -> ApiError:
    return ApiError(
        413,
        f"request body is {size} bytes; this server accepts at most {limits.max_body_bytes}",
        code="request_too_large",
    )


async def read_body(request: Any, limits: RequestLimits) -> bytes:
    """The body of a starlette ``Request``, within the size and time limits."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits, declared)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise _too_large(limits, f"more than {limits.max_body_bytes}")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            f"request body not received within {limits.body_timeout_s:g} s ({size} bytes arrived)",
            code="request_timeout",
        ) from None
    return b"".join(chunks)


def parse_json(content_type: str, raw: bytes) -> Any:
    """The body as JSON, or a 400 in OpenAI's shape."""
    kind = content_type.split(";")[0].strip()
    if kind != "application/json":
        raise ApiError(400, f"Content-Type must be application/json, not {kind!r}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON") from None
