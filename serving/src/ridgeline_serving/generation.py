"""An API request's sampling parameters and prompt as the engine's ``GenerationRequest``s (one
per choice), or the 400/404 that says why not."""

from __future__ import annotations

from ridgeline.api.serving_args import ServingArgs
from ridgeline_serving import openai_api as oa
from ridgeline_serving.engine import GenerationRequest


def generation_requests(
    args: ServingArgs,
    vocab_size: int,
    body: oa.SamplingParams,
    prompt_ids: list[int],
    chat: bool,
) -> list[GenerationRequest]:
    if body.model != args.model_name:
        raise oa.ApiError(
            404,
            f"model {body.model!r} does not exist; this server serves {args.model_name!r}",
            param="model",
            code="model_not_found",
        )
    body.check_supported()
    param = "messages" if chat else "prompt"
    if not prompt_ids:
        raise oa.ApiError(400, "the prompt encodes to no tokens", param=param)
    if max(prompt_ids) >= vocab_size:
        raise oa.ApiError(
            400,
            f"token id {max(prompt_ids)} is outside the vocabulary (size {vocab_size})",
            param=param,
        )
    context = args.max_context_tokens
    prompt = len(prompt_ids)
    wanted = body.max_tokens or min(args.default_max_tokens, max(context - prompt, 0))
    if prompt + wanted > context or wanted < 1:
        raise oa.ApiError(
            400,
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt + max(wanted, 1)} tokens ({prompt} in the prompt, "
            f"{max(wanted, 1)} for the completion).",
            param=param,
            code="context_length_exceeded",
        )
    return [
        GenerationRequest(
            prompt_ids,
            wanted,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=max(body.top_k, 0),
            # choice i of a seeded request is seeded too, each with its own seed
            seed=None if body.seed is None else body.seed + i,
            stop=body.stops,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logprobs=body.top_logprobs_wanted,
            ignore_eos=body.ignore_eos,
            min_tokens=body.min_tokens,
            repetition_penalty=body.repetition_penalty,
        )
        for i in range(body.n)
    ]
