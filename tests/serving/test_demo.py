"""`make demo` as a user runs it: a model trained in the run answers a question about the ridge
point in words from the project's docs, not bytes."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from ridgeline_dev.demo import ANSWER_PREFIX
from ridgeline_dev.trained_model import chat_examples, doc_sources, training_text

REPO = Path(__file__).resolve().parents[2]
WORD = re.compile(r"[A-Za-z0-9]+")


def test_make_demo_answers_in_words_from_the_docs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ridgeline_dev.demo"],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
    # It says what the model is.
    assert re.search(r"model: a tiny Llama \(.*\) trained for \d+ s on the CPU", out), out
    assert "on the project's own docs" in out
    lines = [ln for ln in out.splitlines() if ln.startswith(ANSWER_PREFIX)]
    assert len(lines) == 1, out
    answer = ast.literal_eval(lines[0].removeprefix(ANSWER_PREFIX))
    assert isinstance(answer, str)
    assert answer.replace("\n", " ").isprintable(), answer  # an answer may run over lines
    words = WORD.findall(answer)
    assert len(words) >= 3, answer
    known = {w.lower() for w in WORD.findall(training_text(chat_examples(doc_sources(REPO))))}
    found = [w for w in words if w.lower() in known]
    assert len(found) >= 0.8 * len(words), (answer, set(words) - set(found))
    # Letters and spaces, as prose: not the byte soup of a random model.
    letters = sum(c.isalpha() or c.isspace() for c in answer)
    assert letters >= 0.85 * len(answer), answer
