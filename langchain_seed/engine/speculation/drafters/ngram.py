"""Prompt lookup: find the sequence's last n tokens earlier in its own prompt and output."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

from langchain_seed.engine.speculation.drafters.base import Draft

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState


def lookup(
    tokens: Seq[int], max_len: int, max_ngram: int = 3, min_ngram: int = 1
) -> tuple[list[int], int]:
    """Continuation of the most recent earlier occurrence of the longest matching suffix.

    For n from ``max_ngram`` down to ``min_ngram``: take the last n tokens, search for
    them earlier in ``tokens`` (latest occurrence first) and return up to ``max_len``
    tokens that followed that occurrence.

    Returns:
        ``(continuation, n)``: the draft and the length of the suffix it matched;
        ``([], 0)`` when nothing matches.
    """
    size = len(tokens)
    if max_len <= 0 or size < 2:
        return [], 0
    for n in range(min(max_ngram, size - 1), min_ngram - 1, -1):
        suffix = list(tokens[size - n :])
        # Latest occurrence that ends before the suffix itself starts being compared.
        for start in range(size - n - 1, -1, -1):
            if tokens[start] == suffix[0] and list(tokens[start : start + n]) == suffix:
                follow = list(tokens[start + n : start + n + max_len])
                if follow:
                    return follow, n
    return [], 0


class NgramDrafter:
    """Prompt-lookup drafter (deterministic drafts, no model call)."""

    name = "ngram"

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def propose(self, sequences: Seq[SequenceState], max_lens: Seq[int]) -> list[Draft]:
        """One prompt-lookup draft per sequence, of kind ``"ngram/<n>"`` for an n-token match.

        A longer match is stronger evidence (a 1-token match mostly finds an unrelated
        continuation), so the draft policy measures acceptance per match length.
        """
        drafts = []
        for seq, max_len in zip(sequences, max_lens):
            tokens, n = lookup(seq.token_ids, max_len, self.max_ngram, self.min_ngram)
            drafts.append(Draft(tokens, None, self.name, kind=f"{self.name}/{n}" if n else ""))
        return drafts

    def release(self, sequence: SequenceState) -> None:
        """Nothing to forget: the lookup reads the sequence itself."""
