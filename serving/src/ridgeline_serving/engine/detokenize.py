"""Incremental detokenization with stop strings: the work per token does not grow with the
output. A fast (Rust) tokenizer decodes through its own ``DecodeStream``; any other decodes a
short window of recent tokens (vLLM's prefix/read offsets: the window starts at the previous
emission so a tokenizer's leading-space rules see context). Either way the text
holds back a trailing partial UTF-8 character and any tail that could begin a stop string, and
searches for stop strings only in the text that can contain a new match."""

from __future__ import annotations

from typing import Any

from tokenizers.decoders import DecodeStream

# A UTF-8 character spans at most 4 bytes, so at most 4 byte tokens: a stream that has held
# back more tokens than this is holding invalid bytes, and would decode them all again at
# every step (a cost growing with the output) if it kept waiting.
MAX_PENDING_TOKENS = 8


class Detokenizer:
    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # tokens already turned into text
        self.fed = 0  # tokens given to the stream
        self.held = ""  # stable text not yet emitted (may begin a stop string)
        self.tail = ""  # the last emitted characters a stop string could span
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = backend
        self.stream = DecodeStream(skip_special_tokens=True) if backend is not None else None

    def add(self, token: int, final: bool) -> tuple[str, bool]:
        """Append a token; returns (text now safe to emit, stop string hit)."""
        self.ids.append(token)
        if (
            self.stream is not None
            and self.backend is not None
            and not (final or self.stops or self.held)
        ):
            # the common case: a fast tokenizer, no stop strings, nothing held back
            self.fed = len(self.ids)
            piece = self._step_stream(token)
            if piece is None:
                return "", False
            self.read = self.fed
            return piece, False
        return self._advance(final)

    def _step_stream(self, token: int) -> str | None:
        assert self.stream is not None
        assert self.backend is not None
        piece: str | None = self.stream.step(self.backend, token)
        if piece is None and len(self.ids) - self.read > MAX_PENDING_TOKENS:
            # invalid bytes: emit them as decode does (replacement characters), start afresh
            piece = self._decode(self.ids[self.read :])
            self.stream = DecodeStream(skip_special_tokens=True)
        return piece

    def finish(self) -> str:
        """The sequence ended without a new token (end of sequence): flush what is held."""
        text, _ = self._advance(True)
        return text

    def _advance(self, final: bool) -> tuple[str, bool]:
        if self.stream is not None and self.backend is not None:
            if self.fed < len(self.ids):
                self.fed = len(self.ids)
                piece = self._step_stream(self.ids[-1])
                if piece is not None:
                    self.held += piece
                    self.read = len(self.ids)
            if final and self.read < len(self.ids):
                # the stream holds an incomplete character: end with what decode makes of it
                start = max(self.read - 4, 0)
                before = self._decode(self.ids[start : self.read])
                self.held += self._decode(self.ids[start:])[len(before) :]
                self.read = len(self.ids)
        else:
            before = self._decode(self.ids[self.prefix : self.read])
            after = self._decode(self.ids[self.prefix :])
            if len(after) > len(before) and (final or not after.endswith("\ufffd")):
                self.held += after[len(before) :]
                self.prefix, self.read = self.read, len(self.ids)
        if not self.stops:
            out, self.held = self.held, ""
            return out, False
        window = self.tail + self.held
        cut = min((i for s in self.stops if (i := window.find(s)) >= 0), default=-1)
        if cut >= 0:
            out = window[len(self.tail) : cut] if cut >= len(self.tail) else ""
            self.held = ""
            return out, True
        keep = 0 if final else _stop_prefix_overlap(window, self.stops)
        emit_to = max(len(window) - keep, len(self.tail))
        out = window[len(self.tail) : emit_to]
        self.held = window[emit_to:]
        self.tail = (self.tail + out)[-self.longest_stop :]
        return out, False

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def _stop_prefix_overlap(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that a stop string starts with."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-k:]):
                best = k
                break
    return best
