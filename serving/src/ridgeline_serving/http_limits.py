"""What one HTTP request may cost a replica before the engine sees it.

Ray Serve's proxy hands a request to the replica as soon as its headers arrive and relays the
body as the replica reads it (``proxy.py``: ``receive_asgi_messages``), so a request holds one
of Serve's slots (``max_ongoing_requests``) from its first byte. Its ``request_timeout_s`` is
end-to-end and would also cut long generations, so the replica bounds the body itself:

- the body's size: at most ``max_body_bytes`` (a ``Content-Length`` above it is refused before
  a byte is read; a chunked body is cut off where it passes it): 413;
- the body's time: all of it within ``body_timeout_s`` of the request's arrival: 408;
- slow bodies: a body still arriving ``SlowBodies.grace_s`` after its request did needs one of
  a few slots for slow bodies, or is cut off at once (408), so slow clients hold at most that
  many of Serve's slots beyond the grace, whatever their number;
- the prompt's size before it is tokenized: a prompt that fits ``max_context_tokens`` has at
  most ``MAX_CHARS_PER_TOKEN`` characters per token, so a longer one is refused (400) without
  spending the tokenizer's time and memory on it.

A request joins the replica's in-flight count (the 429 limit) only once its body is complete,
so bodies in transit never lock complete requests out. The limits follow from the context;
only the body timeout is a ``ServingArgs`` field.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect

from ridgeline_serving.openai_api import ApiError

# Byte-level BPE vocabularies (GPT-2, Llama 3, Qwen 2) average about 4 characters of English
# per token; their longest entries (runs of spaces, code indentation) stay far below a prompt
# that averages 32, so a prompt longer than this cannot fit the context.
MAX_CHARS_PER_TOKEN = 32
# A character in a JSON string is at most 6 bytes on the wire (a \uXXXX escape).
JSON_BYTES_PER_CHAR = 6
# The rest of a request: parameters, chat roles, stop strings, a token-id prompt.
BODY_SLACK_BYTES = 1 << 20
# A body still arriving this long after its request needs a slow-body slot: the largest body
# (25 MiB at a 131,072-token context) takes 2 s at 100 Mbit/s, a typical one milliseconds.
SLOW_BODY_GRACE_S = 1.0


class ClientGoneError(Exception):
    """The client closed its connection before its body arrived."""


@dataclass
class SlowBodies:
    """The slots for bodies still arriving ``grace_s`` after their request: at most
    ``slots`` at a time; one more is cut off when its grace ends."""

    slots: int
    grace_s: float = SLOW_BODY_GRACE_S
    held: int = 0

    def take(self) -> bool:
        if self.held >= self.slots:
            return False
        self.held += 1
        return True

    def give_back(self) -> None:
        self.held -= 1


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


async def read_body(request: Any, limits: RequestLimits, slow: SlowBodies) -> bytes:
    """The body of a starlette ``Request``, within the size and time limits; ``ClientGoneError``
    if the client leaves first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits, declared)
    chunks: list[bytes] = []
    size = 0
    held = False
    refused = False
    loop = asyncio.get_running_loop()

    def grace_over(deadline: asyncio.Timeout) -> None:
        nonlocal held, refused
        held = slow.take()
        if not held:  # cut off now: the timeout fires in the read below
            refused = True
            deadline.reschedule(loop.time())

    try:
        async with asyncio.timeout(limits.body_timeout_s) as deadline:
            timer = loop.call_later(slow.grace_s, grace_over, deadline)
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limits.max_body_bytes:
                        raise _too_large(limits, f"more than {limits.max_body_bytes}")
                    chunks.append(chunk)
            finally:
                timer.cancel()
                if held:
                    slow.give_back()
    except TimeoutError:
        if refused:
            message = (
                f"request body still arriving after {slow.grace_s:g} s ({size} bytes arrived) "
                f"while {slow.slots} slower bodies were already arriving; send it faster"
            )
        else:
            message = (
                f"request body not received within {limits.body_timeout_s:g} s "
                f"({size} bytes arrived)"
            )
        raise ApiError(408, message, code="request_timeout") from None
    except ClientDisconnect:
        raise ClientGoneError from None
    return b"".join(chunks)


def parse_json(content_type: str, raw: bytes) -> Any:
    """The body as JSON, or a 400 in OpenAI's shape."""
    # media types are case-insensitive, and parameters (charset) follow a ';' (RFC 9110 8.3.1);
    # json.loads reads UTF-8, -16 and -32 by their bytes
    kind = content_type.split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(400, f"Content-Type must be application/json, not {kind!r}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON") from None
