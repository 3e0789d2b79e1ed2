"""The OpenAI wire format: requests, responses, errors, SSE chunks. Over 300 lines: the two
request schemas share their sampling fields and bounds, which stay in one place."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ridgeline_serving.engine.base import TokenLogprob


class ApiError(Exception):
    """An error in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


# Parameters this server does not implement, refused by name rather than silently ignored:
# (field, value that is the same as leaving it out).
UNSUPPORTED: list[tuple[str, Any]] = [
    ("logit_bias", {}),
    ("echo", False),
    ("suffix", None),
    ("tools", []),
    ("functions", []),
    ("tool_choice", "none"),
    ("response_format", {"type": "text"}),
    # vLLM's extensions that this engine does not implement (guided decoding, other filters)
    ("guided_json", None),
    ("guided_regex", None),
    ("guided_choice", None),
    ("guided_grammar", None),
    ("guided_decoding_backend", None),
    ("guided_whitespace_pattern", None),
    ("structured_outputs", None),
    ("min_p", 0.0),
    ("stop_token_ids", []),
    ("include_stop_str_in_output", False),
    ("bad_words", []),
    ("allowed_token_ids", None),
    ("use_beam_search", False),
    ("prompt_logprobs", None),
]
MAX_N = 16
# Integers the engine holds in int64 arrays: anything larger is refused here, by name, rather
# than overflowing a batch's arrays (a top_k above the vocabulary means the vocabulary).
MAX_INT = 2**31 - 1
# OpenAI's limit on stop strings, and a bound on their total length (the engine holds back at
# most the longest one's length of text, and builds a table per stop when a request joins).
MAX_STOPS = 4
MAX_STOP_CHARS = 4096
MAX_REPETITION_PENALTY = 2.0


class StreamOptions(BaseModel):
    """Strict booleans: ``"false"`` (a string) is refused, not taken as true."""

    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False
    # vLLM's: with include_usage, every chunk carries the usage so far (guidellm sends it)
    continuous_usage_stats: StrictBool = False


class SamplingParams(BaseModel):
    # Clients send fields that change nothing here (user, metadata, store...): ignore those;
    # the ones whose meaning we would silently change are refused by name (UNSUPPORTED).
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INT)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1, le=MAX_INT, description="vLLM's; 0 or -1: off")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # vLLM's sampling extensions, which benchmarking clients send to fix output lengths
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0, le=MAX_INT)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=MAX_REPETITION_PENALTY)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=MAX_N)
    best_of: int | None = Field(default=None, ge=1, le=MAX_INT)
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        if sum(map(len, stops)) > MAX_STOP_CHARS:
            raise ValueError(f"stop sequences total at most {MAX_STOP_CHARS} characters")
        return value

    def check_supported(self) -> None:
        extra = self.model_extra or {}
        for name, neutral in UNSUPPORTED:
            if extra.get(name, neutral) not in (neutral, None):
                raise ApiError(400, f"{name} is not supported by this server", param=name)
        if self.best_of not in (None, self.n):
            raise ApiError(400, "best_of is not supported by this server", param="best_of")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ApiError(
                400,
                f"min_tokens ({self.min_tokens}) must be at most max_tokens ({self.max_tokens})",
                param="min_tokens",
            )

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def continuous_usage(self) -> bool:
        """vLLM's ``continuous_usage_stats``: the usage so far on every chunk, only where the
        usage was asked for at all (as vLLM decides it)."""
        options = self.stream_options
        return options is not None and options.include_usage and options.continuous_usage_stats

    @property
    def top_logprobs_wanted(self) -> int | None:
        """None: no logprobs; k: the chosen token's and the k most likely."""
        return None


class CompletionRequest(SamplingParams):
    # text, or token ids (OpenAI allows both); a list holds exactly one prompt
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[int] | list[str] | list[list[int]]) -> str | list[int]:
        one: Any = value
        if isinstance(value, list) and value and not isinstance(value[0], int):
            if len(value) != 1:
                raise ValueError("send one prompt per request")
            one = value[0]
        if isinstance(one, str):
            _check_unicode(one)
            return one
        ids = [int(t) for t in one]
        if not ids:
            raise ValueError("the prompt has no tokens")
        if min(ids) < 0:
            raise ValueError("token ids are not negative")
        return ids

    @property
    def text(self) -> str | None:
        return self.prompt if isinstance(self.prompt, str) else None

    @property
    def token_ids(self) -> list[int] | None:
        return None if isinstance(self.prompt, str) else list(self.prompt)  # type: ignore[arg-type]

    @property
    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode at character {exc.start} (a lone surrogate)") from None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None  # null: an assistant turn that only called tools

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        for part in value if isinstance(value, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                # image_url, input_audio, file...: say why, rather than "a valid string"
                raise PydanticCustomError(
                    "text_only",
                    "this model serves text only; {kind} content parts are not supported",
                    {"kind": kind},
                )
        return value

    @field_validator("content")
    @classmethod
    def _unicode(cls, value: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        for text in [value] if isinstance(value, str) else [p.text for p in value or []]:
            _check_unicode(text)
        return value

    def flat(self) -> dict[str, str]:
        if self.content is None:
            text = ""
        elif isinstance(self.content, str):
            text = self.content
        else:
            text = "".join(p.text for p in self.content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class ChatCompletionRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INT)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @property
    def top_logprobs_wanted(self) -> int | None:
        if not self.logprobs:
            if self.top_logprobs:
                raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            return None
        return self.top_logprobs or 0

    @model_validator(mode="after")
    def _max(self) -> ChatCompletionRequest:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    tokens, text_offset = [], []
    for entry in entries:
        tokens.append(entry.token)
        text_offset.append(offset)
        offset += len(entry.token)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries],
        "text_offset": text_offset,
    }


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def completion_choice(
    index: int, text: str, finish: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}


def chat_choice(
    index: int, text: str, finish: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
        "logprobs": logprobs,
    }


def body(
    rid: str, model: str, chat: bool, choices: list[dict[str, Any]], prompt: int, completion: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt, completion),
    }


def chunk(rid: str, model: str, chat: bool, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def chat_delta(
    index: int, delta: dict[str, str], finish: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}


def sse(data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"
