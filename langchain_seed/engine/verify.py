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

Two sampling rules, both exact:

- *rejection* (:func:`accept_sampling`, requests without a seed): Leviathan et al.'s rule
  with the request's own random stream. The emitted token depends on the draft, so the
  output repeats only if the drafts do.
- *coupled* (:func:`accept_coupled`, seeded requests): the token at output position
  ``t`` is the Gumbel-max sample ``argmax_x p_t(x) / E_t(x)`` with ``E_t ~ Exp(1)``
  i.i.d. per token, drawn from a stream keyed by ``(seed, t)`` alone
  (:func:`position_noise`). A draft token is accepted iff it equals that sample. The
  output is then a function of the seed and the prompt only: the same with or without
  drafts, next to any neighbours, under any policy and drafter, and equal to plain
  sampling with that seed. Deterministic drafts are accepted with probability ``p(x)``,
  as under rejection; a model drafter that samples with the same noise agrees with the
  target at least ``(1 - TV) / (1 + TV)`` of the time (Gumbel coupling).
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


_MASK64 = (1 << 64) - 1


def position_seed(seed: int, position: int) -> int:
    """The seed of output position ``position``'s noise: splitmix64 of ``(seed, position)``.

    A counter-based stream: a position's draw never depends on how many draws came
    before it (draft lengths, neighbours, the cost model's timing).
    """
    z = (seed + 0x9E3779B97F4A7C15 * (position + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def position_noise(
    seed: int, positions: Seq[int], vocab: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Exponential noise ``E_t(x) ~ Exp(1)`` for each output position ``t`` in ``positions``.

    Returns:
        ``[len(positions), vocab]`` float32, strictly positive.
    """
    rows = []
    for t in positions:
        gen = torch.Generator(device=device).manual_seed(position_seed(seed, t))
        u = torch.rand(vocab, generator=gen, device=device)  # [vocab] in [0, 1)
        rows.append(-torch.log1p(-u))  # inverse CDF of Exp(1)
    return torch.stack(rows).clamp_min(1e-30)  # [n, vocab]


def sample_coupled(probs: torch.Tensor, noise: torch.Tensor) -> list[int]:
    """Gumbel-max samples ``argmax_x probs(x) / noise(x)`` per row.

    ``argmax log p - log E`` with ``E ~ Exp(1)`` is ``argmax log p + G`` with Gumbel ``G``:
    an exact draw from ``probs``; tokens with ``p = 0`` are never chosen.

    Args:
        probs: ``[n, vocab]`` processed distributions.
        noise: ``[n, vocab]`` from :func:`position_noise`.
    """
    return (probs / noise).argmax(dim=-1).tolist()


def accept_coupled(p: torch.Tensor, draft: Seq[int], noise: torch.Tensor) -> tuple[int, int]:
    """Coupled rule for seeded requests: accept while the draft equals the coupled sample.

    Args:
        p: ``[g + 1, vocab]`` processed target distributions.
        draft: ``g`` draft tokens.
        noise: ``[g + 1, vocab]`` noise of the output positions ``p`` predicts.

    Returns:
        ``(accepted, next_token)``, as :func:`accept_greedy` on the coupled samples.
    """
    return accept_greedy(sample_coupled(p, noise), draft)


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
