"""A small causal LM as drafter, batched over all running sequences.

The draft model keeps its own :class:`SlotCache` with the same rows as the target. Its
cache may lag behind the sequence (it holds ``D <= N - 1`` of the ``N`` tokens); the
first draft forward of a step feeds every row its missing tokens (ragged), each further
draft position is one forward for the whole batch, and one host copy brings every row's
draft token back. After verification the engine calls the :meth:`ModelDrafter.verified`
hook so the draft cache keeps only tokens the sequence kept; it moves the cache's rows
with the target's (the ``runner`` attribute).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from langchain_seed.engine.execution.runner import ModelRunner
from langchain_seed.engine.speculation.drafters.base import Draft
from langchain_seed.engine.speculation.sampling import (
    position_noise,
    process_logits,
    sample_coupled,
    sample_inverse_cdf,
)

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState


CATCH_UP = 8
"""A row whose draft cache lags by more tokens is caught up by a prefill (no logits) first."""


class ModelDrafter:
    """Draft tokens from a small model sharing the target's vocabulary."""

    name = "model"
    costly = True
    """Every draft position is a forward: the draft policy sizes drafts before asking."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        """The draft model's runner (its own KV pool, rows laid out like the target's)."""
        self._drafted: dict[int, tuple[int, list[int]]] = {}  # seq_id -> (N, draft tokens)

    @property
    def forwards(self) -> int:
        """Draft-model forwards so far."""
        return self.runner.forwards

    @torch.inference_mode()
    def propose(self, sequences: Seq[SequenceState], max_lens: Seq[int]) -> list[Draft]:
        """Draft ``max_lens[i]`` tokens for ``sequences[i]`` (rows contiguous from the first)."""
        drafts = [Draft([], None, self.name) for _ in sequences]
        if not sequences or max(max_lens, default=0) <= 0:
            return drafts
        start = sequences[0].row
        probs: list[list[torch.Tensor]] = [[] for _ in sequences]
        feed: list[list[int]] = []
        # Never past the draft model's context: with N tokens, drafting g feeds positions up
        # to N + g - 2 (the pending token at N - 1, then g - 1 drafts).
        room = [self.runner.max_positions + 1 - s.num_tokens for s in sequences]
        max_lens = [max(0, min(g, r)) for g, r in zip(max_lens, room)]
        if max(max_lens, default=0) <= 0:
            return drafts
        for seq, g in zip(sequences, max_lens):
            tokens = seq.token_ids
            self._drafted[seq.seq_id] = (len(tokens), [])
            feed.append(tokens[self.runner.lengths[seq.row] :] if g > 0 else [])
        if max(len(f) for f in feed) > CATCH_UP:  # a lagging cache: catch up without logits
            self.runner.prefill(start, [f[:-1] for f in feed])
            feed = [f[-1:] for f in feed]
        dev = self.runner.device
        for depth in range(max(max_lens)):
            active = [i for i, g in enumerate(max_lens) if depth < g and feed[i]]
            index = torch.tensor([[i, len(feed[i]) - 1] for i in active]).to(dev, non_blocking=True)
            logits = self.runner.forward(start, feed)  # [b, s, vocab]
            assert logits is not None
            rows = logits[index[:, 0], index[:, 1]]  # [a, vocab]
            picked = rows.argmax(dim=-1)  # [a]: greedy rows' drafts
            usable = torch.ones_like(picked)  # [a]: 0 where a row's q is not finite
            for j, i in enumerate(active):
                seq = sequences[i]
                self.runner.keep(seq.row, self.runner.lengths[seq.row] + len(feed[i]))
                if not seq.params.greedy:
                    token, q = self._draft_token(seq, rows[j], len(seq.output_ids) + depth)
                    picked[j] = token
                    if q is not None:
                        probs[i].append(q)
                        usable[j] = torch.isfinite(q).all()
            chosen, fine = torch.stack([picked, usable]).tolist()  # one host copy per position
            feed = [[] for _ in sequences]
            for j, i in enumerate(active):
                if not fine[j]:  # this row's draft ends here; its neighbours draft on
                    probs[i].pop()
                    continue
                drafts[i].tokens.append(int(chosen[j]))
                if depth + 1 < max_lens[i]:
                    feed[i] = [int(chosen[j])]
            if not any(feed):
                break
        for i, seq in enumerate(sequences):
            self._drafted[seq.seq_id][1].extend(drafts[i].tokens)
            if probs[i]:
                drafts[i].probs = torch.stack(probs[i])  # [g, vocab]
        return drafts

    @staticmethod
    def _draft_token(
        seq: SequenceState, logits: torch.Tensor, position: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The sampled draft token at output ``position`` from ``logits`` (``[vocab]``).

        Returns the token (a 0-d device tensor: no host copy) and, for the rejection rule
        (sampled without a seed), its processed distribution q (``[vocab]``); ``None``
        where verification needs no q.
        """
        q = process_logits(logits[None], seq.params)  # [1, vocab]
        if seq.params.seed is not None:
            # Coupled rule: draft with the noise the target's sample at this output
            # position will use, so the two agree as often as they can.
            noise = position_noise(seq.params.seed, [position], q.shape[-1], q.device)
            return sample_coupled(q, noise)[0], None
        # Inverse CDF rather than torch.multinomial, which raises on a non-finite row (and
        # would fail the whole batch); such a row's draft is cut by the caller instead.
        u = torch.rand(1, generator=seq.generator, device=q.device)  # [1]
        return sample_inverse_cdf(q, u)[0], q[0]

    def verified(self, seq: SequenceState, new_tokens: Seq[int]) -> None:
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

    def release(self, sequence: SequenceState) -> None:
        """Forget per-sequence bookkeeping."""
        self._drafted.pop(sequence.seq_id, None)
