"""Detokenization, stop strings and streaming deltas for one sequence (engine thread)."""

from __future__ import annotations

import threading
from typing import Any

from langchain_seed.engine.sequence import Sequence


class TextTracker:
    """Turns a sequence's output ids into text, cuts stop strings, emits safe deltas.

    A delta never ends inside a multi-byte character (a trailing U+FFFD is held back)
    and never ends with the start of a stop string, so streamed text always equals a
    prefix of the final text.
    """

    def __init__(self, tokenizer: Any, lock: threading.Lock) -> None:
        self.tokenizer = tokenizer
        self.lock = lock

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens."""
        with self.lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def update(self, seq: Sequence) -> bool:
        """Refresh ``seq.text``; return True when a stop string was found (text is cut)."""
        text = self.decode(seq.output_ids)
        stopped = False
        cut = len(text)
        for stop in seq.params.stop:
            # Search only where a new occurrence can start (old text held no stop string).
            idx = text.find(stop, max(0, len(seq.text) - len(stop)))
            if idx != -1 and idx < cut:
                cut, stopped = idx, True
        seq.text = text[:cut]
        return stopped

    def delta(self, seq: Sequence, final: bool) -> str:
        """New text since the last delta that is safe to show."""
        end = len(seq.text)
        if not final:
            if seq.text.endswith("\ufffd"):
                end -= 1
            for stop in seq.params.stop:
                for k in range(min(len(stop) - 1, end), 0, -1):
                    if seq.text[end - k : end] == stop[:k]:
                        end = min(end, len(seq.text) - k)
                        break
        if end <= seq.emitted_chars:
            return ""
        piece = seq.text[seq.emitted_chars : end]
        seq.emitted_chars = end
        return piece
