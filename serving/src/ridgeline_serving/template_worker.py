"""The child process that renders a model's chat template (``chat_template.py`` runs it).

With transformers' own renderer (``render_jinja_template``: its jinja2 sandbox, filters and
globals), so the text is exactly what ``apply_chat_template`` makes. Speaks JSON lines on
stdin/stdout: first ``{"template", "variables"}`` (answered ``{"ready": true}``), then one
``{"messages"}`` per render, answered ``{"text"}`` or ``{"error"}``. Nothing else may write to
stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
MAX_ERROR_CHARS = 500


def _die_with_parent() -> None:
    """A render that never returns never reads stdin's EOF: the kernel ends this process when
    the replica does instead (Linux; elsewhere the replica's kill on timeout still holds)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _reply(out: Any, message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def main() -> None:
    _die_with_parent()
    from transformers.utils.chat_template_utils import render_jinja_template

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a template's or library's print must not break the protocol
    setup = json.loads(stdin.readline())
    template, variables = setup["template"], setup["variables"]
    _reply(stdout, {"ready": True})
    for line in stdin:
        messages = json.loads(line)["messages"]
        try:
            # typed as str, returns (texts, generation indices)
            rendered: Any = render_jinja_template(
                conversations=[messages],
                chat_template=template,
                add_generation_prompt=True,
                **variables,
            )
            _reply(stdout, {"text": rendered[0][0]})
        except Exception as exc:  # the template's own error: the caller turns it into a 400
            _reply(stdout, {"error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]})


if __name__ == "__main__":
    main()
