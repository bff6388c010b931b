"""Verification: a step's drafts checked against the target's logits, losslessly.

The rules (the design's section 4.3, "lossless verification"):

- *greedy* rows (temperature 0) accept draft tokens while they equal the target's argmax,
  then emit the argmax at the first mismatch (or the bonus token after the last draft);
- *seeded* sampled rows accept while the draft equals the coupled sample of its position
  (:func:`~.sampling.sample_coupled`: a function of the seed and the position only);
- other sampled rows use the rejection rule of Leviathan et al. 2023 / Chen et al. 2023:
  accept draft ``x`` with probability ``min(1, p(x) / q(x))``, on rejection draw from
  ``normalize(max(p - q, 0))``, after a fully accepted draft draw the bonus token from
  ``p``; a deterministic draft (consensus, n-gram) is a point mass ``q = one_hot(x)``.

``p`` and ``q`` are the *processed* distributions (temperature, top-k, top-p and a
grammar's mask applied alike to draft and target), so the output is distributed as the
target's own sampler. The tensor rules themselves, and the terms accepted / recovered /
bonus, are :mod:`~langchain_seed.engine.speculation.sampling`'s.

Shapes: ``b`` verified rows, each fed its pending token and its draft, padded to ``s``
positions (``s = 1 +`` the longest draft, ``g = s - 1`` draft positions); ``r`` rows of
one sampler setting; ``w`` rows that ask for logprobs, ``k`` alternatives each.

A :class:`Verification` is built before the target forward: everything the rules need
from the host (drafts, row indices, random numbers) goes to the device before the
forward is queued. :meth:`Verification.verify` then turns the forward's logits into one
:class:`Verdict` per row with one device-to-host copy for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.results import TokenLogprob
from langchain_seed.engine.speculation.sampling import (
    accept_matching,
    accept_rejection,
    position_noise,
    process_scores,
    sample_coupled,
)
from langchain_seed.engine.text.grammar import unpack_allowed

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState
    from langchain_seed.engine.speculation.drafters.base import Draft


@dataclass(frozen=True, slots=True)
class Verdict:
    """One row's verification: draft tokens kept, the emitted token, finite logits."""

    accepted: int
    next_token: int
    finite: bool
    logprobs: tuple[TokenLogprob, ...] | None = None
    """The ``accepted + 1`` emitted tokens' entries, for a row that asks for logprobs."""


class Verification:
    """The verification of ``seqs`` (contiguous rows) with their ``drafts``, staged.

    Args:
        seqs: the rows to verify.
        drafts: one draft per row (possibly empty), with grammar masks where constrained.
        device: the target model's device.
        vocab: the target's vocabulary (logits per position).
    """

    @torch.inference_mode()
    def __init__(
        self, seqs: Seq[SequenceState], drafts: Seq[Draft], device: torch.device, vocab: int
    ) -> None:
        self.seqs, self.drafts = seqs, drafts
        self.feed = [[seq.last_token, *d.tokens] for seq, d in zip(seqs, drafts)]
        """What the target forward feeds each row: its pending token, then its draft."""
        s = max(len(f) for f in self.feed)
        packed = [[len(d.tokens), *d.tokens, *[0] * (s - 1 - len(d.tokens))] for d in drafts]
        table = torch.tensor(packed, dtype=torch.long).to(device, non_blocking=True)
        self.lengths = table[:, 0]  # [b]
        self.drafted = table[:, 1:]  # [b, g]
        self.valid = torch.arange(s, device=device)[None, :] <= self.lengths[:, None]  # [b, s]
        constrained = [i for i, d in enumerate(drafts) if d.allowed is not None]
        self.constrained = _indices(constrained, device) if constrained else None
        self.allowed = (
            torch.stack([_padded_bits(drafts[i], s) for i in constrained]).to(
                device, non_blocking=True
            )
            if constrained
            else None
        )  # [c, s, words]
        matching = [
            i for i, seq in enumerate(seqs) if seq.params.greedy or seq.params.seed is not None
        ]
        self.matching = _indices(matching, device) if matching else None
        asking = [i for i, seq in enumerate(seqs) if seq.params.logprobs is not None]
        self.scored = _Scored(asking, seqs, s, device, vocab) if asking else None
        """The rows that ask for logprobs, or ``None``."""
        self.samplers = [
            _SamplerRows(rows, params, seqs, drafts, s, device, vocab, self.scored)
            for rows, params in _by_sampler(seqs)
            if not params.greedy
        ]
        """Sampled rows, one entry per sampler setting (one ``process_scores`` each)."""

    @torch.inference_mode()
    def verify(self, logits: torch.Tensor) -> list[Verdict]:
        """The rows' verdicts from the target forward's ``[b, s, vocab]`` float32 ``logits``.

        Greedy rows accept while the draft equals the argmax, seeded rows while it equals
        the coupled sample, other sampled rows by rejection sampling; all rows in a few
        batched tensor operations, and one device-to-host copy at the end.

        Rows that ask for logprobs (``SamplingParams.logprobs``) get their emitted tokens'
        log probabilities under the distribution each row samples from (greedy rows: the
        logits at temperature 1), grammar masks included: one ``log_softmax``, gather and
        top-k over those rows' positions, in the same host copy.
        """
        b = logits.shape[0]
        # A NaN or an infinity anywhere in a position's logits makes their sum non-finite:
        # one reduction instead of a [b, s, vocab] mask (about 1 ms a step at b = 16).
        finite = (torch.isfinite(logits.sum(dim=-1)) | ~self.valid).all(dim=-1)  # [b]
        if self.constrained is not None:  # grammar rows: refused tokens get -inf everywhere
            rows = self.constrained
            assert self.allowed is not None
            allowed = unpack_allowed(self.allowed, logits.shape[-1])  # [c, s, vocab]
            logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))
        accepted = torch.zeros(b, dtype=torch.long, device=logits.device)
        next_token = torch.zeros(b, dtype=torch.long, device=logits.device)
        targets = logits.argmax(dim=-1)  # [b, s]: greedy rows' targets
        # Rows asking for logprobs: greedy rows score at temperature 1, sampled rows get
        # their sampler's scores below.
        scored = logits[self.scored.rows] if self.scored is not None else None  # [w, s, vocab]
        for sampler in self.samplers:
            scores = process_scores(logits[sampler.rows], sampler.params)  # [r, s, vocab]
            probs = scores.softmax(dim=-1)  # [r, s, vocab]
            if sampler.scored is not None:
                assert scored is not None
                scored[sampler.scored_at] = scores[sampler.scored]
            # A row whose sampling distribution is not finite fails alone (its verdict), and
            # its neighbours' sampling never depends on it.
            usable = torch.isfinite(probs).all(dim=-1) | ~self.valid[sampler.rows]  # [r, s]
            finite[sampler.rows] &= usable.all(dim=-1)
            if sampler.seeded is not None:
                assert sampler.noise is not None
                seeded = sampler.rows[sampler.seeded]
                targets[seeded] = sample_coupled(probs[sampler.seeded], sampler.noise)
            if sampler.rejection is not None:
                assert sampler.uniforms is not None
                rows = sampler.rows[sampler.rejection]
                accepted[rows], next_token[rows] = accept_rejection(
                    probs[sampler.rejection],
                    self.drafted[rows],
                    self.lengths[rows],
                    sampler.draft_probs,
                    sampler.uniforms,
                )
        if self.matching is not None:
            rows = self.matching
            accepted[rows], next_token[rows] = accept_matching(
                targets[rows], self.drafted[rows], self.lengths[rows]
            )
        verdicts = torch.stack([accepted, next_token, finite.long()])  # [3, b]
        if scored is None:
            host = verdicts.tolist()  # the one sync
            return [Verdict(a, t, bool(f)) for a, t, f in zip(*host)]
        # One host copy for verdicts and logprobs: float64 holds token ids (< 2**53) and
        # float32 logprobs exactly.
        assert self.scored is not None
        emitted = self._emitted(accepted, next_token)[self.scored.rows]  # [w, s]
        flat = self.scored.tensors(scored, emitted)  # [w * s * (1 + 2k)] float64
        values = torch.cat([verdicts.flatten().double(), flat]).tolist()  # the one sync
        host = [[int(v) for v in values[i * b : (i + 1) * b]] for i in range(3)]
        entries = self.scored.entries(values[3 * b :], host[0], host[1], self.drafts)
        return [Verdict(a, t, bool(f), entries.get(i)) for i, (a, t, f) in enumerate(zip(*host))]

    def _emitted(self, accepted: torch.Tensor, next_token: torch.Tensor) -> torch.Tensor:
        """``[b, s]`` each row's emitted tokens: its accepted drafts, then ``next_token``.

        Positions past a row's ``accepted`` hold padding, never read.
        """
        pad = self.drafted.new_zeros(self.drafted.shape[0], 1)
        tokens = torch.cat([self.drafted, pad], dim=1)  # [b, s]
        return tokens.scatter(1, accepted[:, None], next_token[:, None])


class _SamplerRows:
    """Sampled rows with one sampler setting: their indices, noise, uniforms, draft probs."""

    def __init__(
        self,
        rows: list[int],
        params: SamplingParams,
        seqs: Seq[SequenceState],
        drafts: Seq[Draft],
        s: int,
        device: torch.device,
        vocab: int,
        scored: _Scored | None,
    ) -> None:
        self.params = params
        self.rows = _indices(rows, device)  # [r]
        # Rows asking for logprobs: where they sit among these rows and in ``scored``'s rows.
        asking = [(j, scored.at[i]) for j, i in enumerate(rows) if scored and i in scored.at]
        self.scored = _indices([j for j, _ in asking], device) if asking else None
        self.scored_at = _indices([w for _, w in asking], device) if asking else None
        seeded = [j for j, i in enumerate(rows) if seqs[i].params.seed is not None]
        others = [j for j, i in enumerate(rows) if seqs[i].params.seed is None]
        self.seeded = _indices(seeded, device) if seeded else None
        self.rejection = _indices(others, device) if others else None
        self.noise: torch.Tensor | None = None  # [seeded, s, vocab]
        if seeded:
            self.noise = torch.ones(len(seeded), s, vocab, device=device)
            for k, j in enumerate(seeded):
                _noise(seqs[rows[j]], drafts[rows[j]], self.noise[k])
        chosen = [drafts[rows[j]] for j in others]
        self.uniforms = (
            torch.stack([_uniforms(seqs[rows[j]], drafts[rows[j]], s, device) for j in others])
            if others
            else None
        )  # [rejection, s]
        self.draft_probs = _draft_probs(chosen, s - 1, vocab, device) if others else None


class _Scored:
    """Rows that ask for logprobs: their indices and how many alternatives each wants."""

    def __init__(
        self, rows: list[int], seqs: Seq[SequenceState], s: int, device: torch.device, vocab: int
    ) -> None:
        self.index = rows
        self.at = {i: w for w, i in enumerate(rows)}
        """Batch row -> its row in the scored tensors."""
        self.rows = _indices(rows, device)  # [w]
        self.top = [min(cast(int, seqs[i].params.logprobs), vocab) for i in rows]
        self.k = max(self.top)
        self.s = s

    def tensors(self, scores: torch.Tensor, emitted: torch.Tensor) -> torch.Tensor:
        """What the host needs, flat float64: emitted tokens' logprobs, the top-k ids and logprobs.

        Args:
            scores: ``[w, s, vocab]`` the scored rows' sampler scores (unnormalised).
            emitted: ``[w, s]`` their emitted tokens.

        Returns:
            ``[w * s]`` chosen logprobs, then ``[w * s * k]`` top ids and ``[w * s * k]``
            top logprobs (most likely first), concatenated.
        """
        logprobs = scores.log_softmax(dim=-1)  # [w, s, vocab]
        parts = [logprobs.gather(2, emitted[:, :, None]).flatten()]  # [w * s]
        if self.k:
            top = logprobs.topk(self.k, dim=-1)  # [w, s, k]
            parts += [top.indices.flatten(), top.values.flatten()]
        return torch.cat([part.double() for part in parts])

    def entries(
        self,
        values: Seq[float],
        accepted: Seq[int],
        next_token: Seq[int],
        drafts: Seq[Draft],
    ) -> dict[int, tuple[TokenLogprob, ...]]:
        """Batch row -> its emitted tokens' :class:`TokenLogprob` from :meth:`tensors`' values."""
        w, s, k = len(self.index), self.s, self.k
        chosen = values[: w * s]  # [w, s]
        ids, tops = values[w * s : w * s * (1 + k)], values[w * s * (1 + k) :]  # [w, s, k]
        out: dict[int, tuple[TokenLogprob, ...]] = {}
        for n, i in enumerate(self.index):
            tokens = [*drafts[i].tokens[: accepted[i]], next_token[i]]
            row = []
            for j, token in enumerate(tokens):
                at = (n * s + j) * k
                top = tuple(
                    (int(ids[at + m]), tops[at + m])
                    for m in range(self.top[n])
                    if tops[at + m] != float("-inf")  # probability 0: no alternative
                )
                row.append(TokenLogprob(token, chosen[n * s + j], top))
            out[i] = tuple(row)
        return out


def _padded_bits(draft: Draft, s: int) -> torch.Tensor:
    """A constrained row's bitmasks padded to ``s`` positions (padding allows every token)."""
    assert draft.allowed is not None
    bits = draft.allowed
    if bits.shape[0] < s:
        pad = torch.full((s - bits.shape[0], bits.shape[1]), -1, dtype=bits.dtype)
        bits = torch.cat([bits, pad])
    return bits


def _indices(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)


def _by_sampler(seqs: Seq[SequenceState]) -> list[tuple[list[int], SamplingParams]]:
    """Row indices by identical sampler settings (one ``process_scores`` call for each)."""
    by_key: dict[tuple[object, ...], tuple[list[int], SamplingParams]] = {}
    for i, seq in enumerate(seqs):
        p = seq.params
        key = (p.greedy, p.temperature, p.top_k, p.top_p)
        by_key.setdefault(key, ([], p))[0].append(i)
    return list(by_key.values())


def _noise(seq: SequenceState, draft: Draft, out: torch.Tensor) -> None:
    """Coupled noise of the output positions a seeded row verifies, into ``out`` ``[s, vocab]``.

    Only the row's own ``1 + len(draft)`` positions are drawn (a draw costs ~0.5 ms per
    position for a 49k vocabulary on a CPU); the padding keeps ``out``'s ones, whose
    samples are never read (acceptance stops at the row's own length).
    """
    t, seed = len(seq.output_ids), seq.params.seed
    assert seed is not None
    n = 1 + len(draft.tokens)
    position_noise(seed, range(t, t + n), out.shape[-1], out.device, out=out[:n])


def _uniforms(seq: SequenceState, draft: Draft, s: int, device: torch.device) -> torch.Tensor:
    """U(0, 1) draws of one row, ``[s]``: one per draft token, the last for the emitted token.

    Exactly ``len(draft) + 1`` draws come from the row's own generator (the padding is
    zeros, never read), so a request's random stream depends on its own drafts only, not
    on how long its neighbours' drafts are.
    """
    g = len(draft.tokens)
    u = torch.rand(g + 1, generator=seq.generator, device=device)
    pad = torch.zeros(s - 1 - g, device=device)
    return torch.cat([u[:g], pad, u[g:]])


def _draft_probs(
    drafts: Seq[Draft], g: int, vocab: int, device: torch.device
) -> torch.Tensor | None:
    """``[r, g, vocab]`` draft distributions (zeros where a draft is deterministic)."""
    if all(d.probs is None for d in drafts) or g == 0:
        return None
    out = torch.zeros(len(drafts), g, vocab, device=device)
    for i, d in enumerate(drafts):
        if d.probs is not None and len(d.tokens):
            out[i, : len(d.tokens)] = d.probs[: len(d.tokens)]
    return out
