"""Chat templates rendered in a child process: the same ids as ``apply_chat_template``, a
template's own error named, and a template that never returns stopped at its bound."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ridgeline_dev.tiny_model import write_tokenizer
from ridgeline_serving.chat_template import (
    ChatTemplateError,
    ChatTemplateTimeoutError,
    TemplateRenderer,
    encode_chat,
    renderer_for,
)

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "how is the model sized?"},
]
FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.parametrize(
    "messages", [MESSAGES, MESSAGES[1:], [*MESSAGES, {"role": "assistant", "content": "by memory"}]]
)
def test_the_ids_are_apply_chat_templates(tokenizer: Any, messages: list[dict[str, str]]) -> None:
    expected = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert encode_chat(tokenizer, messages) == list(expected)


def test_one_renderer_per_tokenizer(tokenizer: Any) -> None:
    assert renderer_for(tokenizer) is renderer_for(tokenizer)


def test_a_template_that_raises_is_named_with_its_message() -> None:
    renderer = TemplateRenderer("{{ raise_exception('Conversation roles must alternate') }}", {})
    try:
        with pytest.raises(ChatTemplateError, match="Conversation roles must alternate"):
            renderer.render(MESSAGES)
    finally:
        renderer.close()


def test_a_template_that_never_returns_is_stopped_and_the_next_render_works() -> None:
    renderer = TemplateRenderer(FOREVER + "{{ bos_token }}", {"bos_token": "<s>"}, timeout_s=0.5)
    try:
        with pytest.raises(ChatTemplateTimeoutError, match=r"0\.5 s"):
            renderer.render(MESSAGES)
        # the stuck child was killed; the next render starts a new one (and times out again)
        with pytest.raises(ChatTemplateTimeoutError):
            renderer.render(MESSAGES)
    finally:
        renderer.close()
    quick = TemplateRenderer("{{ bos_token }}{{ messages[-1]['content'] }}", {"bos_token": "<s>"})
    try:
        assert quick.render(MESSAGES) == "<s>how is the model sized?"
    finally:
        quick.close()


def test_a_tokenizer_without_a_template_says_to_use_completions(tokenizer: Any) -> None:
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="/v1/completions"):
        renderer_for(tokenizer)
