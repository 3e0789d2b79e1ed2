"""Incremental detokenization with stop strings: the work per token does not grow with the
output. A fast (Rust) tokenizer decodes through its own ``DecodeStream``; any other decodes a
short window of recent tokens (vLLM's prefix/read offsets: the window starts at the previous
emission so a tokenizer's leading-space rules see context). Either way the text
holds back a trailing partial UTF-8 character and any tail that could begin a stop string, and
stop strings are matched as the text arrives (``stops``), each character once per stop."""

from __future__ import annotations

from typing import Any

from tokenizers.decoders import DecodeStream

from ridgeline_serving.engine.stops import StopMatcher

# A UTF-8 character spans at most 4 bytes, so at most 4 byte tokens: a stream that has held
# back more tokens than this is holding invalid bytes, and would decode them all again at
# every step (a cost growing with the output) if it kept waiting.
MAX_PENDING_TOKENS = 8


class Detokenizer:
    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.matcher = StopMatcher(stops)
        self.stops = self.matcher.stops
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # tokens already turned into text
        self.fed = 0  # tokens given to the stream
        self.held = ""  # stable text not yet emitted (may begin a stop string)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = backend
        self.stream = DecodeStream(skip_special_tokens=True) if backend is not None else None

    def add(self, token: int, final: bool, stops: bool = True) -> tuple[str, bool]:
        """Append a token; returns (text now safe to emit, stop string hit). With ``stops``
        False a stop string that ends in this token's text does not count (min_tokens)."""
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
        return self._advance(final, stops)

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

    def _advance(self, final: bool, stops: bool = True) -> tuple[str, bool]:
        seen = len(self.held)  # the held text the matcher has already taken
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
        match = self.matcher.feed(self.held[seen:], stops)
        if match is not None:
            # the match began in the held text: the matcher never holds more than is held
            cut = match - (self.matcher.fed - len(self.held))
            out, self.held = self.held[: max(cut, 0)], ""
            return out, True
        emit_to = len(self.held) - (0 if final else min(self.matcher.pending, len(self.held)))
        out, self.held = self.held[:emit_to], self.held[emit_to:]
        return out, False

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))
