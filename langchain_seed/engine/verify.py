"""Lossless acceptance of draft tokens: greedy and rejection sampling (DESIGN 4.3).

Vocabulary, per verified sequence with draft ``d_1 .. d_g`` and target distributions
``p_0 .. p_g`` (``p_k`` predicts the token after ``d_k``; ``p_0`` the token after the
pending token):

- *accepted* tokens: the longest draft prefix the rule keeps;
- *recovered* token: emitted at the first rejection (greedy: the target's argmax;
  sampling: a draw from ``normalize(max(p_k - q_k, 0))``);
- *bonus* token: emitted after a fully accepted draft, drawn from ``p_g``.

Every verification therefore emits ``accepted + 1`` tokens. ``p`` and ``q`` are the
*processed* distributions (temperature, top-k, top-p applied the same way for draft
and target), so the output is distributed exactly as the target's own sampler.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from langchain_seed.engine.config import SamplingParams


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sampling distribution from raw logits, processed as transformers does.

    Args:
        logits: ``[n, vocab]`` raw logits.
        params: temperature (> 0), top_k (0 = off), top_p (1.0 = off).

    Returns:
        ``[n, vocab]`` probabilities (float32).
    """
    scores = logits.float() / params.temperature  # [n, vocab]
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1:]  # [n, 1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        # transformers TopPLogitsWarper: drop the lowest tokens whose cumulative mass
        # is <= 1 - top_p, always keeping the most likely token.
        sorted_scores, sorted_idx = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - params.top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores.softmax(dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from ``probs`` (``[vocab]``)."""
    return int(torch.multinomial(probs, 1, generator=generator))


def accept_greedy(target_argmax: Seq[int], draft: Seq[int]) -> tuple[int, int]:
    """Greedy rule: accept while the draft equals the target's argmax.

    Args:
        target_argmax: ``g + 1`` argmax tokens of ``p_0 .. p_g``.
        draft: ``g`` draft tokens.

    Returns:
        ``(accepted, next_token)``: the recovered token at the first mismatch, or the
        bonus token ``argmax(p_g)`` after a full match.
    """
    accepted = 0
    for d, t in zip(draft, target_argmax):
        if d != t:
            break
        accepted += 1
    return accepted, int(target_argmax[accepted])


def accept_sampling(
    p: torch.Tensor,
    draft: Seq[int],
    q: torch.Tensor | None,
    generator: torch.Generator | None,
) -> tuple[int, int]:
    """Rejection-sampling rule of Leviathan et al. 2023 / Chen et al. 2023.

    Args:
        p: ``[g + 1, vocab]`` processed target distributions.
        draft: ``g`` draft tokens.
        q: ``[g, vocab]`` processed draft distributions, or ``None`` for a deterministic
            draft (consensus, n-gram), verified as a point mass ``q = one_hot(d)``.
        generator: the request's random generator.

    Returns:
        ``(accepted, next_token)``.
    """
    device = p.device
    for k, d in enumerate(draft):
        p_d = p[k, d]
        # q_d = 1 for a point mass, so the acceptance probability min(1, p/q) is p(d).
        q_d = q[k, d] if q is not None else torch.ones((), device=device)
        u = torch.rand((), generator=generator, device=device)
        # q >= p: accept with probability p/q; q < p: always accept (u < 1 <= p/q).
        if u * q_d < p_d:
            continue
        # Rejected: recover from the residual normalize(max(p - q, 0)).
        if q is not None:
            residual = torch.clamp(p[k] - q[k], min=0.0)
        else:
            residual = p[k].clone()
            residual[d] = 0.0
        total = residual.sum()
        if total <= 0:  # p == q exactly: the residual is empty, any draw from p is exact
            residual = p[k]
        return k, sample(residual / residual.sum(), generator)
    return len(draft), sample(p[len(draft)], generator)
