"""The request models' bounds, without a server: every numeric parameter is bounded (a value
past its bound is a 400 naming it, never an overflow in the engine), vLLM's extensions that
the engine honours are taken, the ones it does not are refused by name, stop strings are
bounded, stream_options are strict booleans, and a non-text content part says why it is
refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ridgeline_serving import openai_api as oa

COMPLETION = {"model": "m", "prompt": "a"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "a"}]}


def refusal(kind: type[oa.SamplingParams], body: dict[str, Any]) -> tuple[str | None, str]:
    """(param, message) of the 400 a body gets, as the app reports it."""
    try:
        kind.model_validate(body).check_supported()
    except ValidationError as exc:
        first = exc.errors()[0]
        return ".".join(str(p) for p in first["loc"]), first["msg"]
    except oa.ApiError as exc:
        status = exc.status
        error = exc.body["error"]
    else:
        raise AssertionError(f"accepted: {body}")
    assert status == 400
    return error["param"], str(error["message"])


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("top_k", 10**30),
        ("top_k", 2**31),
        ("top_k", -2),
        ("max_tokens", 10**30),
        ("max_tokens", 0),
        ("min_tokens", 10**30),
        ("min_tokens", -1),
        ("seed", 2**64),
        ("seed", -(2**63) - 1),
        ("n", 10**30),
        ("best_of", 10**30),
        ("logprobs", 10**30),
        ("temperature", 1e308),
        ("temperature", -0.5),
        ("top_p", 0),
        ("top_p", 1.5),
        ("presence_penalty", 10**30),
        ("frequency_penalty", -3),
        ("repetition_penalty", 0),
        ("repetition_penalty", 10**30),
        ("repetition_penalty", -1),
    ],
)
def test_every_numeric_parameter_is_bounded(param: str, value: float) -> None:
    assert refusal(oa.CompletionRequest, {**COMPLETION, param: value})[0] == param


@pytest.mark.parametrize(
    ("param", "value"),
    [("top_logprobs", 10**30), ("max_completion_tokens", 10**30), ("top_k", 10**30)],
)
def test_chat_numeric_parameters_are_bounded(param: str, value: int) -> None:
    body = {**CHAT, param: value, "logprobs": True}
    assert refusal(oa.ChatCompletionRequest, body)[0] == param


def test_the_largest_accepted_values_are_ones_the_engine_holds() -> None:
    body = oa.CompletionRequest.model_validate(
        {**COMPLETION, "top_k": 2**31 - 1, "min_tokens": 3, "max_tokens": 3, "seed": 2**64 - 1}
    )
    body.check_supported()
    assert body.top_k == 2**31 - 1


def test_vllms_sampling_extensions_are_taken() -> None:
    body = oa.ChatCompletionRequest.model_validate(
        {**CHAT, "ignore_eos": True, "min_tokens": 4, "repetition_penalty": 1.2, "max_tokens": 8}
    )
    body.check_supported()
    assert (body.ignore_eos, body.min_tokens, body.repetition_penalty) == (True, 4, 1.2)
    plain = oa.CompletionRequest.model_validate(COMPLETION)
    assert (plain.ignore_eos, plain.min_tokens, plain.repetition_penalty) == (False, 0, 1.0)


def test_min_tokens_above_max_tokens_is_refused() -> None:
    assert refusal(oa.CompletionRequest, {**COMPLETION, "min_tokens": 9, "max_tokens": 8}) == (
        "min_tokens",
        "min_tokens (9) must be at most max_tokens (8)",
    )
    chat = {**CHAT, "min_tokens": 9, "max_completion_tokens": 8}
    assert refusal(oa.ChatCompletionRequest, chat)[0] == "min_tokens"


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("guided_json", {"type": "object"}),
        ("guided_regex", "[a-z]+"),
        ("guided_choice", ["yes", "no"]),
        ("guided_grammar", "root ::= 'a'"),
        ("guided_decoding_backend", "xgrammar"),
        ("structured_outputs", {"json": {}}),
        ("min_p", 0.1),
        ("stop_token_ids", [5]),
        ("use_beam_search", True),
    ],
)
def test_vllm_extensions_not_implemented_are_refused_by_name(param: str, value: Any) -> None:
    assert refusal(oa.CompletionRequest, {**COMPLETION, param: value}) == (
        param,
        f"{param} is not supported by this server",
    )


def test_their_neutral_values_are_accepted() -> None:
    neutral: dict[str, Any] = {
        "guided_json": None,
        "min_p": 0.0,
        "stop_token_ids": [],
        "use_beam_search": False,
    }
    oa.CompletionRequest.model_validate({**COMPLETION, **neutral}).check_supported()


def test_stop_strings_are_bounded_in_number_and_length() -> None:
    assert refusal(oa.CompletionRequest, {**COMPLETION, "stop": list("abcde")})[0] == "stop"
    over = ["x" * 2000, "y" * 2000, "z" * 97]
    param, message = refusal(oa.CompletionRequest, {**COMPLETION, "stop": over})
    assert param == "stop"
    assert "total at most 4096 characters" in message
    assert refusal(oa.CompletionRequest, {**COMPLETION, "stop": "x" * 4097})[0] == "stop"
    at_limit = ["x" * 2000, "y" * 2000, "z" * 96]
    assert oa.CompletionRequest.model_validate({**COMPLETION, "stop": at_limit}).stops == at_limit


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, {}])
def test_include_usage_is_a_strict_boolean(value: Any) -> None:
    body = {**COMPLETION, "stream": True, "stream_options": {"include_usage": value}}
    param, _ = refusal(oa.CompletionRequest, body)
    assert param == "stream_options.include_usage"


def test_include_usage_true_and_false() -> None:
    for value in (True, False):
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": value}}
        assert oa.ChatCompletionRequest.model_validate(body).include_usage is value
    assert oa.ChatCompletionRequest.model_validate(CHAT).include_usage is False
    # vLLM's continuous_usage_stats counts only with include_usage, as vLLM decides it
    for include, continuous in ((True, True), (False, True), (True, False)):
        options = {"include_usage": include, "continuous_usage_stats": continuous}
        body = {**CHAT, "stream": True, "stream_options": options}
        request = oa.ChatCompletionRequest.model_validate(body)
        assert request.continuous_usage is (include and continuous)
    usage_stats = {**CHAT, "stream_options": {"continuous_usage_stats": "true"}}
    param, _ = refusal(oa.ChatCompletionRequest, usage_stats)
    assert param == "stream_options.continuous_usage_stats"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
def test_a_non_text_content_part_says_the_model_serves_text_only(part: dict[str, Any]) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, part]}]
    assert refusal(oa.ChatCompletionRequest, {**CHAT, "messages": messages}) == (
        "messages.0.content",
        f"this model serves text only; {part['type']} content parts are not supported",
    )


def test_text_parts_are_still_taken() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    body = oa.ChatCompletionRequest.model_validate({**CHAT, "messages": messages})
    assert body.messages[0].flat() == {"role": "user", "content": "ab"}
