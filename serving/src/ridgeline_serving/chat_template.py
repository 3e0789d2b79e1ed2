"""A model's chat template, rendered within a time bound.

transformers renders chat templates in a jinja2 sandbox, which limits what a template may
touch but not how long it runs: a template that loops forever held a worker thread forever,
and a thread cannot be stopped, so a few such requests hung every request of the replica.
Here the template runs in a child process (``template_worker.py``, transformers' renderer),
which is killed when a render passes ``TEMPLATE_TIMEOUT_S`` and started again for the next
one; the replica tokenizes the text as ``apply_chat_template`` does (no special tokens
added). One child per tokenizer renders one conversation at a time: a normal template takes
milliseconds.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

TEMPLATE_TIMEOUT_S = 2.0
START_TIMEOUT_S = 60.0  # importing transformers in the child, on a loaded machine


class ChatTemplateError(Exception):
    """The template refused the messages (its ``raise_exception``) or failed on them."""


class ChatTemplateTimeoutError(Exception):
    """The template did not finish within the bound."""


class TemplateRenderer:
    """One chat template and the child process that renders it."""

    def __init__(
        self,
        template: str,
        variables: dict[str, Any],
        timeout_s: float = TEMPLATE_TIMEOUT_S,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._setup = json.dumps({"template": template, "variables": variables}, default=str)
        self._lock = threading.Lock()
        self._worker = _Worker()
        # a renderer dropped with its tokenizer takes its child with it
        weakref.finalize(self, self._worker.stop)

    def render(self, messages: list[dict[str, str]]) -> str:
        with self._lock:
            if self._worker.child is None:
                self._start()
            try:
                self._worker.send({"messages": messages})
            except OSError:
                self._worker.stop()
                raise RuntimeError("the chat template's worker process has exited") from None
            answer = self._worker.read(self.timeout_s)
        if answer is None:
            raise ChatTemplateTimeoutError(
                f"the model's chat template did not finish within {self.timeout_s:g} s"
            )
        if "error" in answer:
            raise ChatTemplateError(str(answer["error"]))
        return str(answer["text"])

    def close(self) -> None:
        with self._lock:
            self._worker.stop()

    def _start(self) -> None:
        self._worker.start(self._setup)
        if self._worker.read(self.start_timeout_s) is None:
            raise RuntimeError(
                f"the chat template's worker process did not start within "
                f"{self.start_timeout_s:g} s"
            )


class _Worker:
    """The child process and what it has written that was not read yet."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.buffer = b""

    def start(self, setup: str) -> None:
        self.buffer = b""
        self.child = subprocess.Popen(
            [sys.executable, "-m", "ridgeline_serving.template_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.child.stdin is not None
        self.child.stdin.write(setup.encode() + b"\n")
        self.child.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        assert self.child is not None
        assert self.child.stdin is not None
        self.child.stdin.write(json.dumps(message).encode() + b"\n")
        self.child.stdin.flush()

    def read(self, timeout_s: float) -> dict[str, Any] | None:
        """The child's next line, or None (and the child killed) past the timeout."""
        child = self.child
        assert child is not None
        assert child.stdout is not None
        fd = child.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.stop()
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = child.poll()
                self.stop()
                raise RuntimeError(f"the chat template's worker process exited ({code})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()


_renderers: weakref.WeakKeyDictionary[Any, TemplateRenderer] = weakref.WeakKeyDictionary()
_renderers_lock = threading.Lock()


def renderer_for(tokenizer: Any) -> TemplateRenderer:
    """The renderer of a transformers tokenizer's chat template (made once per tokenizer)."""
    with _renderers_lock:
        renderer = _renderers.get(tokenizer)
        if renderer is None:
            try:
                template = tokenizer.get_chat_template()
            except ValueError as exc:  # no template, or several and none named default
                raise ChatTemplateError(f"{exc} Use /v1/completions instead.") from None
            renderer = TemplateRenderer(template, dict(tokenizer.special_tokens_map))
            _renderers[tokenizer] = renderer
        return renderer


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """What ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)`` gives,
    with the template's time bounded."""
    text = renderer_for(tokenizer).render(messages)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]
