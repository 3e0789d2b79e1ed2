"""`ridgeline serve`'s words for a replica that failed to load, from Serve's status message."""

from __future__ import annotations

from ridgeline_serving.deploy_failure import MAX_LINES, exception_text

# The shape of Serve's deployment message after "Error:\n" (Ray 2.60, a corrupt tokenizer.json).
RAY_ERROR = """\
\x1b[36mray::ServeReplica:broken:model.initialize_and_get_metadata()\x1b[39m (pid=27179, ip=127.0.0.1)
  File "/usr/lib/python3.11/concurrent/futures/_base.py", line 401, in __get_result
    raise self._exception
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/ray/serve/_private/replica.py", line 1928, in initialize
    raise RuntimeError(traceback.format_exc()) from None
RuntimeError: Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/serve/api.py", line 468, in __init__
    cls.__init__(self, *args, **kwargs)
  File "/srv/ridgeline/serving/src/ridgeline_serving/engine/transformers_engine.py", line 120, in __init__
    self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
                     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/transformers/tokenization_utils_base.py", line 1937, in _from_pretrained
    tokenizer_file_handle = json.load(tokenizer_file_handle)
                            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.11/json/decoder.py", line 355, in raw_decode
    raise JSONDecodeError("Expecting value", s, err.value) from None
json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)
"""


def test_the_exception_and_where_ridgeline_called_it() -> None:
    assert exception_text(RAY_ERROR) == (
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
        "  at ridgeline_serving/engine/transformers_engine.py:120: "
        "self.tokenizer = AutoTokenizer.from_pretrained(model_dir)"
    )


def test_a_multi_line_exception_is_kept_and_capped() -> None:
    lines = [f"detail {i}" for i in range(MAX_LINES + 5)]
    error = '  File "/x/lib.py", line 3, in f\n    g()\nValueError: bad\n' + "\n".join(lines)
    text = exception_text(error).splitlines()
    assert text[0] == "ValueError: bad"
    assert text[1] == "detail 0"
    assert len(text) == MAX_LINES + 1
    assert text[-1] == "... (6 more lines in Ray's logs)"


def test_a_message_without_a_traceback_is_itself() -> None:
    assert exception_text("  replica died: out of memory\n") == "replica died: out of memory"
