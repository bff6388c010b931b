"""Sampling and lossless acceptance of draft tokens, vectorised over the batch.

The rules are stated in :mod:`~langchain_seed.engine.speculation.verification`, which applies
them to a step's rows; the tensor functions are here.

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

- *rejection* (:func:`accept_rejection`, requests without a seed): Leviathan et al.'s rule
  with the request's own random stream. The emitted token depends on the draft, so the
  output repeats only if the drafts do.
- *coupled* (:func:`accept_matching` on :func:`sample_coupled`, seeded requests): the
  token at output position ``t`` is the Gumbel-max sample ``argmax_x p_t(x) / E_t(x)``
  with ``E_t ~ Exp(1)`` i.i.d. per token, drawn from a stream keyed by ``(seed, t)`` alone
  (:func:`position_noise`). A draft token is accepted iff it equals that sample. The
  output is then a function of the seed and the prompt only: the same with or without
  drafts, next to any neighbours, under any policy and drafter, and equal to plain
  sampling with that seed. Deterministic drafts are accepted with probability ``p(x)``,
  as under rejection; a model drafter that samples with the same noise agrees with the
  target at least ``(1 - TV) / (1 + TV)`` of the time (Gumbel coupling).

Every rule works on a whole padded batch at once (rows ``[r, s]``, drafts padded to
``g = s - 1`` with per-row lengths), on the device, with no host transfer: the runner
moves the accepted counts and next tokens of every row to the host in one copy. The
per-row random numbers come from each request's own generator, drawn up front (one call
per row, as many draws as the row's own draft needs), so the random stream of a request
never depends on its neighbours.

``process_logits`` keeps its own temperature / top-k / top-p code rather than
transformers' warpers: a ragged batch mixes rows with different parameters, and the
warpers take one setting per call. ``tests/unit_tests/test_sampling_warpers.py`` checks
that the two agree on random, peaked, tied, masked and bfloat16 logits.
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
    return process_scores(logits, params).softmax(dim=-1)


def process_scores(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The sampler's scores: logits over the temperature, top-k / top-p filtered tokens -inf.

    ``scores.softmax(-1)`` is :func:`process_logits`; ``scores.log_softmax(-1)`` the log
    probabilities of the sampling distribution (``SamplingParams.logprobs``).

    Args:
        logits: ``[..., vocab]`` raw logits.
        params: temperature (> 0), top_k (0 = off), top_p (1.0 = off).

    Returns:
        ``[..., vocab]`` float32 scores.
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
    return scores


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
    seed: int,
    positions: Seq[int],
    vocab: int,
    device: torch.device | str = "cpu",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exponential noise ``E_t(x) ~ Exp(1)`` for each output position ``t`` in ``positions``.

    Args:
        seed: the request's seed.
        positions: output positions, one noise row each.
        vocab: tokens per row.
        device: where the noise is drawn.
        out: ``[len(positions), vocab]`` float32 to write into (else a new tensor).

    Returns:
        ``[len(positions), vocab]`` float32, strictly positive (``out`` when given).
    """
    if out is None:
        out = torch.empty(len(positions), vocab, dtype=torch.float32, device=device)
    for row, t in enumerate(positions):
        gen = torch.Generator(device=device).manual_seed(position_seed(seed, t))
        # float64: a float32 u is exactly 0 with probability 2**-24 per token, which would
        # give E = 0 and let that token win whatever its p (a vocabulary of 150k would hit
        # it at ~1% of positions); in float64 the chance is 2**-53.
        u = torch.rand(vocab, generator=gen, device=device, dtype=torch.float64)  # [0, 1)
        out[row].copy_(u.neg_().log1p_().neg_())  # inverse CDF of Exp(1), in place
    # E = 0 (u = 0, or E below float32's range) would make its token win whatever its p.
    # In place and per row: 16 rows x 5 positions of a 49k vocabulary took 76 ms with
    # stacked float64 temporaries, about half that like this (2-core CPU).
    return out.clamp_min_(1e-30)


def sample_coupled(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gumbel-max samples ``argmax_x probs(x) / noise(x)`` over the last dimension.

    ``argmax log p - log E`` with ``E ~ Exp(1)`` is ``argmax log p + G`` with Gumbel ``G``:
    an exact draw from ``probs``; tokens with ``p = 0`` are never chosen.

    Args:
        probs: ``[..., vocab]`` processed distributions.
        noise: the same shape, from :func:`position_noise`.

    Returns:
        ``[...]`` token ids (long).
    """
    return (probs / noise).argmax(dim=-1)


def accept_matching(
    targets: torch.Tensor, drafts: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy and coupled rule: accept while the draft equals the target's token.

    Args:
        targets: ``[r, g + 1]`` the target's token at each position (argmax, or the
            coupled sample).
        drafts: ``[r, g]`` draft tokens, padded past each row's length.
        lengths: ``[r]`` draft length of each row.

    Returns:
        ``(accepted [r], next_token [r])``: the target's token at the first mismatch, or
        the bonus token after a full match.
    """
    g = drafts.shape[1]
    valid = torch.arange(g, device=drafts.device)[None, :] < lengths[:, None]  # [r, g]
    match = (targets[:, :g] == drafts) & valid
    accepted = match.long().cumprod(dim=1).sum(dim=1)  # [r]
    return accepted, targets.gather(1, accepted[:, None])[:, 0]


def accept_rejection(
    p: torch.Tensor,
    drafts: torch.Tensor,
    lengths: torch.Tensor,
    q: torch.Tensor | None,
    uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rejection-sampling rule of Leviathan et al. 2023 / Chen et al. 2023, batched.

    Args:
        p: ``[r, g + 1, vocab]`` processed target distributions.
        drafts: ``[r, g]`` draft tokens, padded past each row's length.
        lengths: ``[r]`` draft length of each row.
        q: ``[r, g, vocab]`` processed draft distributions; a row of zeros at a position
            marks a deterministic draft (consensus, n-gram), verified as a point mass
            ``q = one_hot(d)``. ``None``: every draft is deterministic.
        uniforms: ``[r, g + 1]`` independent U(0, 1) draws of each row's own stream: one
            per draft position, the last for the emitted token.

    Returns:
        ``(accepted [r], next_token [r])``: the first rejected position's token drawn
        from ``normalize(max(p - q, 0))``, or after a full acceptance the bonus token
        drawn from ``p`` at the row's last position.
    """
    r, g = drafts.shape
    rows = torch.arange(r, device=p.device)
    valid = torch.arange(g, device=p.device)[None, :] < lengths[:, None]  # [r, g]
    p_d = p[:, :g].gather(2, drafts[:, :, None])[:, :, 0]  # [r, g]
    if q is None:
        deterministic = torch.ones_like(valid)
        q_d = torch.ones_like(p_d)
    else:
        deterministic = q.sum(dim=-1) <= 0  # [r, g]
        q_d = torch.where(deterministic, 1.0, q.gather(2, drafts[:, :, None])[:, :, 0])
    # q >= p: accept with probability p/q; q < p: always accept (u < 1 <= p/q).
    keep = (uniforms[:, :g] * q_d < p_d) & valid
    accepted = keep.long().cumprod(dim=1).sum(dim=1)  # [r]
    p_k = p[rows, accepted]  # [r, vocab]
    at = accepted.clamp(max=max(g - 1, 0))  # the rejected position (when there is one)
    rejected = accepted < lengths
    residual = p_k
    if g:
        point_residual = p_k.scatter(1, drafts[rows, at][:, None], 0.0)  # q = one_hot(d)
        if q is not None:
            model_residual = torch.clamp(p_k - q[rows, at], min=0.0)
            point_residual = torch.where(
                deterministic[rows, at][:, None], point_residual, model_residual
            )
        residual = torch.where(rejected[:, None], point_residual, p_k)
    empty = residual.sum(dim=-1, keepdim=True) <= 0  # p == q exactly: draw from p
    return accepted, sample_inverse_cdf(torch.where(empty, p_k, residual), uniforms[:, g])


def sample_inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One draw per row from ``normalize(weights)`` (``[r, vocab]``) with ``uniforms`` ``[r]``.

    The first token whose cumulative weight exceeds ``u * total``, in float64. A token of
    weight 0 is never drawn: a parallel scan (CUDA) may round two equal prefix sums
    differently, so a chosen token of weight 0 is replaced by the row's heaviest token
    (an event of probability ~1e-16).
    """
    cdf = weights.double().cumsum(dim=-1)  # [r, vocab]
    target = uniforms.double()[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True)[:, 0].clamp(max=weights.shape[-1] - 1)
    chosen = weights.gather(1, index[:, None])[:, 0]
    return torch.where(chosen > 0, index, weights.argmax(dim=-1))
