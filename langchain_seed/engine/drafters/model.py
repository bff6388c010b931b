"""A small causal LM as drafter, batched over all running sequences.

The draft model keeps its own :class:`SlotCache` with the same rows as the target. Its
cache may lag behind the sequence (it holds ``D <= N - 1`` of the ``N`` tokens); the
first draft forward of a step feeds every row its missing tokens (ragged), each further
draft position is one forward for the whole batch. After verification the engine calls
:meth:`ModelDrafter.rollback` so the draft cache keeps only tokens the sequence kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from langchain_seed.engine.drafters.base import Draft
from langchain_seed.engine.runner import ModelRunner
from langchain_seed.engine.verify import position_noise, process_logits, sample_coupled

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import Sequence


class ModelDrafter:
    """Draft tokens from a small model sharing the target's vocabulary."""

    name = "model"

    def __init__(self, model: torch.nn.Module, max_rows: int, device: str | torch.device) -> None:
        self.runner = ModelRunner(model, max_rows, device)
        self.seconds = 0.0
        self._drafted: dict[int, tuple[int, list[int]]] = {}  # seq_id -> (N, draft tokens)

    @property
    def forwards(self) -> int:
        """Draft-model forwards so far."""
        return self.runner.forwards

    def move_row(self, src: int, dst: int) -> None:
        """Follow the target cache when the engine compacts rows."""
        self.runner.cache.move_row(src, dst)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Fork a group sibling's cached prompt."""
        self.runner.cache.copy_prefix(src, dst, min(length, self.runner.lengths[src]))

    @torch.inference_mode()
    def propose(self, sequences: Seq[Sequence], max_lens: Seq[int]) -> list[Draft]:
        """Draft ``max_lens[i]`` tokens for ``sequences[i]`` (rows contiguous from the first)."""
        drafts = [Draft([], None, self.name) for _ in sequences]
        if not sequences or max(max_lens, default=0) <= 0:
            return drafts
        t0 = time.perf_counter()
        start = sequences[0].row
        probs: list[list[torch.Tensor]] = [[] for _ in sequences]
        feed: list[list[int]] = []
        for seq, g in zip(sequences, max_lens):
            tokens = seq.token_ids
            self._drafted[seq.seq_id] = (len(tokens), [])
            feed.append(tokens[self.runner.lengths[seq.row] :] if g > 0 else [])
        for depth in range(max(max_lens)):
            logits = self.runner.forward(start, feed)  # [b, q, vocab]
            assert logits is not None
            next_feed: list[list[int]] = []
            for i, (seq, g) in enumerate(zip(sequences, max_lens)):
                if depth >= g or not feed[i]:
                    next_feed.append([])
                    continue
                self.runner.keep(seq.row, self.runner.lengths[seq.row] + len(feed[i]))
                row_logits = logits[i, len(feed[i]) - 1]  # [vocab]
                token, q = self._draft_token(seq, row_logits, len(seq.output_ids) + depth)
                if q is not None:
                    probs[i].append(q)
                drafts[i].tokens.append(token)
                next_feed.append([token] if depth + 1 < g else [])
            feed = next_feed
            if not any(feed):
                break
        for i, seq in enumerate(sequences):
            self._drafted[seq.seq_id][1].extend(drafts[i].tokens)
            if probs[i]:
                drafts[i].probs = torch.stack(probs[i])  # [g, vocab]
        self.seconds += time.perf_counter() - t0
        return drafts

    @staticmethod
    def _draft_token(
        seq: Sequence, logits: torch.Tensor, position: int
    ) -> tuple[int, torch.Tensor | None]:
        """The draft token at output ``position`` from ``logits`` (``[vocab]``).

        Returns the token and, for the rejection rule (sampled without a seed), its
        processed distribution q (``[vocab]``); ``None`` where verification needs no q.
        """
        if seq.params.greedy:
            return int(logits.argmax()), None
        q = process_logits(logits[None], seq.params)  # [1, vocab]
        if seq.params.seed is not None:
            # Coupled rule: draft with the noise the target's sample at this output
            # position will use, so the two agree as often as they can.
            noise = position_noise(seq.params.seed, [position], q.shape[-1], q.device)
            return sample_coupled(q, noise)[0], None
        return int(torch.multinomial(q[0], 1, generator=seq.generator)), q[0]

    def rollback(self, seq: Sequence, new_tokens: Seq[int]) -> None:
        """Keep only the draft KV of tokens the sequence kept.

        After drafting ``d_1 .. d_g`` the draft cache holds the ``N`` earlier tokens and
        ``d_1 .. d_{g-1}``; the sequence went on with ``new_tokens``, whose last token is
        the new pending one. The cache stays valid for ``N`` plus the common prefix of the
        drafts and the new tokens *before* the pending one (whichever drafter won), so it
        holds at most ``N' - 1`` of the sequence's ``N'`` tokens and the next proposal
        has at least the pending token to feed.
        """
        n_before, drafted = self._drafted.pop(seq.seq_id, (0, []))
        if not drafted:
            return
        common = 0
        for d, t in zip(drafted[:-1], new_tokens[:-1]):
            if d != t:
                break
            common += 1
        self.runner.keep(seq.row, min(self.runner.lengths[seq.row], n_before + common))

    def release(self, sequence: Sequence) -> None:
        """Forget per-sequence bookkeeping."""
        self._drafted.pop(sequence.seq_id, None)
