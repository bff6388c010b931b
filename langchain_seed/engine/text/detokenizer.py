"""Detokenization, stop strings and streaming deltas for one sequence (engine thread).

Detokenization is incremental, as in vLLM's detokenizer and ``tokenizers``' ``DecodeStream``.
The terms, used throughout this file, for a sequence's ``output_ids``:

- *read* tokens ``output_ids[:read_offset]``: their text is final and kept in
  :attr:`DetokState.text`;
- *context* tokens ``output_ids[prefix_offset:read_offset]``: the last tokens read,
  decoded again in front of the new ones so the tokenizer sees those in place (leading-space
  rules of sentencepiece-like decoders, runs of byte tokens);
- *new* tokens ``output_ids[read_offset:]``; the *window* is context + new tokens.

One step decodes the context and the window and keeps the difference:
``new_text = decode(window)[len(decode(context)):]``. When ``new_text`` is complete (non-empty
and not ending in U+FFFD, the replacement character of an unfinished multi-byte character)
the new tokens become read and the offsets advance; otherwise they wait in the window for the
next step. So a step decodes only the tokens since the last step that ended on a complete
character, and a sequence of ``n`` tokens costs ``O(n)`` decoded tokens instead of ``O(n**2)``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from langchain_seed.engine.sequence import SequenceState

REPLACEMENT_CHAR = "\ufffd"
"""What decoders put for bytes that are not (yet) a complete UTF-8 character."""


@dataclass(slots=True)
class DetokState:
    """Incremental detokenization state of one sequence, kept in ``SequenceState.detok``.

    Invariant: ``text`` is the text of the read tokens ``output_ids[:read_offset]`` and
    ``prefix_text``, when known, is ``decode(output_ids[prefix_offset:read_offset])``.
    """

    prefix_offset: int = 0
    """Start of the context tokens."""
    read_offset: int = 0
    """End of the read tokens: the new tokens start here."""
    text: str = ""
    """Text of the read tokens."""
    prefix_text: str | None = ""
    """Text of the context decoded on its own; ``None`` until the next step decodes it."""

    def advance(self, num_tokens: int, text: str) -> None:
        """Mark ``output_ids[:num_tokens]`` read, with ``text`` as their text.

        The tokens read in this step become the next step's context (vLLM's rule).
        """
        if num_tokens > self.read_offset:
            self.prefix_offset, self.read_offset = self.read_offset, num_tokens
        self.text = text
        self.prefix_text = None


class TextTracker:
    """Turns a sequence's output ids into text, cuts stop strings, emits safe deltas.

    A delta never ends inside a multi-byte character (trailing U+FFFD are held back)
    and never ends with the start of a stop string, so streamed text always equals a
    prefix of the final text.

    Every tokenizer call holds ``lock`` (tokenizers are not thread-safe).
    """

    def __init__(self, tokenizer: Any, lock: threading.Lock) -> None:
        self.tokenizer = tokenizer
        self.lock = lock

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens."""
        with self.lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def update(self, seq: SequenceState, *, final: bool | None = None) -> bool:
        """Refresh ``seq.text``; return True when a stop string was found (text is cut).

        Let ``full = decode(seq.output_ids)`` (special tokens skipped) and ``cut(t)`` be
        ``t`` cut before the earliest stop string of ``seq.params.stop``. What is
        guaranteed after each call:

        - When ``final`` or when a stop string is found, ``seq.text == cut(full)`` exactly,
          for every tokenizer: that step decodes all output ids once.
        - Otherwise ``seq.text == cut(full)`` for tokenizers whose decoding is local, i.e.
          the window decoded on its own gives the text of the new tokens after the context's
          text: byte-level BPE (GPT-2, SmolLM2), sentencepiece-like Metaspace / leading-space
          stripping, Python-side byte decoding, special tokens skipped. Trailing U+FFFD are
          *not* held back here: ``seq.text`` ends in them like ``full`` does, and
          :meth:`delta` holds them back.
        - A step whose window text does not start with the context's text decodes all output
          ids (exact again), unless the window ends in U+FFFD: then ``seq.text`` is the text
          of the tokens read so far and the new tokens wait until their character is
          complete. Only decoders whose unfinished character rewrites text before it get
          there (``tokenizers``' ByteFallback makes a whole run of byte tokens U+FFFD).
        - Decoders whose rewriting reaches further back than the context (e.g. the
          ``" ' "`` rule of ``clean_up_tokenization_spaces``) are exact only at the end.

        Args:
            seq: The sequence; its ``output_ids`` may have grown by any number of tokens
                since the last call. Its detokenization state lives in ``seq.detok``.
            final: This is the sequence's last update. ``None`` (default): it is when
                ``seq.finish_reason`` is set, as the engine sets it before this call.
        """
        if final is None:
            final = seq.finish_reason is not None
        text = self._full_text(seq) if final else self._incremental_text(seq)
        cut = self._stop_cut(seq, text)
        if cut is not None and not final:
            # The sequence ends here: make its final text exact whatever the tokenizer.
            text = self._full_text(seq)
            cut = self._stop_cut(seq, text)
        seq.text = text if cut is None else text[:cut]
        return cut is not None

    def delta(self, seq: SequenceState, final: bool) -> str:
        """New text since the last delta that is safe to show.

        Unless ``final``, it holds back trailing U+FFFD (byte-fallback decoders put one per
        byte of an unfinished character) and then the longest tail that begins a stop string.
        """
        text, end = seq.text, len(seq.text)
        if not final:
            while end and text[end - 1] == REPLACEMENT_CHAR:
                end -= 1
            end -= _stop_prefix_len(text, end, seq.params.stop)
        if end <= seq.emitted_chars:
            return ""
        piece = text[seq.emitted_chars : end]
        seq.emitted_chars = end
        return piece

    # ----- detokenization ------------------------------------------------------------
    def _incremental_text(self, seq: SequenceState) -> str:
        """Text of all output ids from the read text plus the decoded window."""
        ids = seq.output_ids
        state = seq.detok
        if not isinstance(state, DetokState) or len(ids) < state.read_offset:
            state = seq.detok = DetokState()  # first step, or output truncated: start over
        if state.prefix_text is None:
            state.prefix_text = self.decode(ids[state.prefix_offset : state.read_offset])
        window_text = self.decode(ids[state.prefix_offset :])
        unfinished = window_text.endswith(REPLACEMENT_CHAR)
        if not window_text.startswith(state.prefix_text):
            # The new tokens changed the context's text. While they end in an unfinished
            # character (tokenizers' ByteFallback turns a whole byte run into U+FFFD) they
            # wait; otherwise the decoder is not local here (clean-up of spaces, ...).
            return state.text if unfinished else self._full_text(seq)
        new_text = window_text[len(state.prefix_text) :]
        if new_text and not unfinished:
            state.advance(len(ids), state.text + new_text)
            return state.text
        # Unfinished character (or nothing yet): the new tokens stay in the window.
        return state.text + new_text

    def _full_text(self, seq: SequenceState) -> str:
        """Decode all output ids and restart the incremental state from that text."""
        text = self.decode(seq.output_ids)
        state = seq.detok
        if not isinstance(state, DetokState) or len(seq.output_ids) < state.read_offset:
            state = seq.detok = DetokState()
        if text.endswith(REPLACEMENT_CHAR):
            seq.detok = DetokState()  # no complete text to read up to: next window = all
        else:
            state.advance(len(seq.output_ids), text)
        return text

    @staticmethod
    def _stop_cut(seq: SequenceState, text: str) -> int | None:
        """Index of the earliest stop string in ``text``, or None when there is none."""
        cut: int | None = None
        for stop in seq.params.stop:
            # Search only where a new occurrence can start (old text held no stop string).
            idx = text.find(stop, max(0, len(seq.text) - len(stop)))
            if idx != -1 and (cut is None or idx < cut):
                cut = idx
        return cut


def _stop_prefix_len(text: str, end: int, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text[:end]`` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), longest, -1):
            if text.endswith(stop[:k], 0, end):
                longest = k
                break
    return longest
