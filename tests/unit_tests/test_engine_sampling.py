"""Sampling keeps the target's distribution (engine/speculation/verification.py), or fails.

On a 16-token vocabulary the exact marginal distributions of the first three generated
tokens are computed from the target; 1,500 sampled requests through each policy with a
draft model must match them within a total-variation tolerance. The draft is a different
random model, so a rule that ignores p (always accept) lands on the draft's distribution
and fails.
"""

from __future__ import annotations

import random

import pytest
import torch

import langchain_seed.engine.speculation.verification as verification_module
from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.speculation.drafters.base import Draft
from langchain_seed.engine.speculation.sampling import (
    accept_matching,
    accept_rejection,
    process_logits,
    sample_inverse_cdf,
)

PROMPT = [0, 5, 9, 4, 7]  # token ids in the 16-token vocabulary
SAMPLES = 1500
TOLERANCE = 0.075  # max total variation per position; sampling noise is ~0.03 here


def exact_marginals(model, params: SamplingParams) -> torch.Tensor:
    """[3, vocab] exact marginals of generated positions 1..3 under the processed sampler."""
    with torch.no_grad():
        vocab = model.config.vocab_size
        base = torch.tensor([PROMPT])
        p1 = process_logits(model(base).logits[0, -1][None], params)[0]  # [V]
        ctx2 = torch.cat([base.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = process_logits(model(ctx2).logits[:, -1], params)  # [V, V]  p(t2 | t1)
        joint12 = p1[:, None] * p2  # [V, V]
        ctx3 = torch.cat(
            [
                base.repeat(vocab * vocab, 1),
                torch.arange(vocab).repeat_interleave(vocab)[:, None],
                torch.arange(vocab).repeat(vocab)[:, None],
            ],
            dim=1,
        )
        p3 = process_logits(model(ctx3).logits[:, -1], params).view(vocab, vocab, vocab)
        m3 = (joint12[:, :, None] * p3).sum(dim=(0, 1))
        return torch.stack([p1, joint12.sum(0), m3])


def empirical_marginals(results, vocab: int) -> torch.Tensor:
    counts = torch.zeros(3, vocab)
    for r in results:
        for pos, tok in enumerate(r.token_ids[:3]):
            counts[pos, tok] += 1
    return counts / counts.sum(dim=1, keepdim=True)


def run(
    pair_paths,
    policy: str,
    params: SamplingParams,
    drafters=("model",),
    group=None,
    *,
    seeded: bool = True,
    extra_drafters=(),
    temperature: float | None = None,
) -> tuple[list, object]:
    """1,500 samples of PROMPT; returns (results, engine stats).

    ``seeded``: every request has its own seed (the coupled rule); otherwise none has
    one (the rejection rule), and the engine's per-request streams are made repeatable
    by seeding Python's ``random``, which draws them.
    """
    target, draft = pair_paths
    config = EngineConfig(
        model=str(target),
        draft_model=str(draft) if "model" in drafters else None,
        policy=policy,
        drafters=tuple(d for d in drafters if d != "extra"),
        max_batch_size=64,
        gamma=3,
        adaptive_gamma=False,
        prefix_cache_tokens=0,
    )
    plist = [
        SamplingParams(
            temperature=params.temperature if temperature is None else temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            max_tokens=3,
            seed=1000 + i if seeded else None,
            ignore_eos=True,
        )
        for i in range(SAMPLES)
    ]
    random.seed(20261201)
    with Engine(config, extra_drafters=extra_drafters) as engine:
        results = engine.generate([PROMPT] * SAMPLES, plist, group=group)
        return results, engine.stats()


class ModeDrafter:
    """Deterministic drafts that are often right: the target's own greedy continuation.

    (A drafter must not look at the target inside the engine; this one holds its own copy
    of the weights, as a perfect draft model would.) Its drafts are point masses, verified
    like n-gram and consensus drafts, and accepted often at a low temperature.
    """

    name = "mode"

    def __init__(self, model) -> None:
        self.model = model

    def propose(self, sequences, max_lens):
        drafts = []
        for seq, n in zip(sequences, max_lens):
            ids = list(seq.token_ids)
            tokens = []
            with torch.no_grad():
                for _ in range(n):
                    tokens.append(int(self.model(torch.tensor([ids])).logits[0, -1].argmax()))
                    ids.append(tokens[-1])
            drafts.append(Draft(tokens, None, self.name))
        return drafts

    def release(self, sequence) -> None:
        pass


SAMPLING_CASES = {
    "plain": SamplingParams(temperature=1.0),
    "top_k": SamplingParams(temperature=0.8, top_k=5),
    "top_p": SamplingParams(temperature=1.2, top_p=0.7),
}


def tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - b).abs().sum(dim=-1)


RULES = {"rejection": False, "coupled": True}  # rule -> seeded


def check(results, exact) -> torch.Tensor:
    """TV distance per position between the samples and the exact marginals."""
    return tv(empirical_marginals(results, exact.shape[1]), exact)


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("policy", ["fcfs_rounds", "batched"])
@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_model_drafter_sampling_matches_target_distribution(
    tiny_small_vocab_pair, unrelated_draft, policy, case, rule
):
    params = SAMPLING_CASES[case]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    results, stats = run(
        (tiny_small_vocab_pair.target_path, unrelated_draft), policy, params, seeded=RULES[rule]
    )
    assert stats.spec.drafted > 0
    distance = check(results, exact)
    assert (distance < TOLERANCE).all(), f"TV per position {distance.tolist()}"


LOW_T = 0.5  # peaked enough that greedy drafts of 2 tokens are accepted often


@pytest.fixture(scope="module")
def mode_drafter(tiny_small_vocab_pair):
    return ModeDrafter(tiny_small_vocab_pair.target)


def run_mode(pair, mode_drafter, seeded: bool):
    params = SamplingParams(temperature=LOW_T)
    results, stats = run(
        (pair.target_path, None),
        "batched",
        params,
        ("extra",),
        seeded=seeded,
        extra_drafters=[mode_drafter],
    )
    return results, stats, exact_marginals(pair.target, params)


@pytest.mark.parametrize("rule", list(RULES))
def test_deterministic_multi_token_drafts_keep_target_distribution(
    tiny_small_vocab_pair, mode_drafter, rule
):
    results, stats, exact = run_mode(tiny_small_vocab_pair, mode_drafter, RULES[rule])
    spec = stats.spec
    assert len(spec.drafted_by_position) >= 2 and spec.drafted_by_position[1] > 0
    assert spec.accepted > 0 and spec.accepted_by_position[1] > 0, "2-token drafts accepted"
    assert spec.acceptance_rate > 0.3, spec.acceptance_rate
    distance = check(results, exact)
    assert (distance < TOLERANCE).all(), f"TV per position {distance.tolist()}"


# Broken rules, batched like the real ones: p [r, g + 1, V], drafts [r, g], lengths [r],
# q [r, g, V] or None, uniforms [r, g + 1]; targets [r, g + 1] for the matching rule.
def never_accept(p, drafts, lengths, q, uniforms):
    """Broken: reject every deterministic draft, draw from p without the draft token."""
    rows = torch.arange(p.shape[0])
    dist = p[:, 0].clone()
    has = lengths > 0
    if drafts.shape[1]:
        dist[rows[has], drafts[has, 0]] = 0.0
    return torch.zeros_like(lengths), sample_inverse_cdf(dist, uniforms[:, -1])


def always_accept(p, drafts, lengths, q, uniforms):
    """Broken: keep the whole draft, whatever p says."""
    rows = torch.arange(p.shape[0])
    return lengths.clone(), sample_inverse_cdf(p[rows, lengths], uniforms[:, -1])


def residual_keeps_draft(p, drafts, lengths, q, uniforms):
    """Broken: on rejection draw from p itself instead of p with the draft token removed."""
    accepted, _ = accept_rejection(p, drafts, lengths, q, uniforms)
    rows = torch.arange(p.shape[0])
    return accepted, sample_inverse_cdf(p[rows, accepted], uniforms[:, -1])


def coupled_always_accept(targets, drafts, lengths):
    """Broken coupled rule: keep the whole draft, then the coupled bonus sample."""
    return lengths.clone(), targets.gather(1, lengths[:, None])[:, 0]


def coupled_never_accept(targets, drafts, lengths):
    """Broken coupled rule: reject the draft token even when it is the coupled sample."""
    accepted, nxt = accept_matching(targets, drafts, lengths)
    first = targets[:, 0]
    if drafts.shape[1]:
        clash = (lengths > 0) & (first == drafts[:, 0])
        first = torch.where(clash, (drafts[:, 0] + 1) % VOCAB, first)
    return torch.zeros_like(accepted), first


VOCAB = 16  # the tiny model's vocabulary (PROMPT's ids are below it)


BROKEN_RULES = {
    "never_accept": ("accept_rejection", never_accept, False),
    "always_accept": ("accept_rejection", always_accept, False),
    "residual_keeps_draft": ("accept_rejection", residual_keeps_draft, False),
    "coupled_always_accept": ("accept_matching", coupled_always_accept, True),
    "coupled_never_accept": ("accept_matching", coupled_never_accept, True),
}


@pytest.mark.parametrize("broken", list(BROKEN_RULES))
def test_each_broken_rule_fails_the_multi_token_draft_check(
    tiny_small_vocab_pair, mode_drafter, monkeypatch, broken
):
    """The same check as above catches every deliberately broken acceptance rule."""
    name, rule, seeded = BROKEN_RULES[broken]
    monkeypatch.setattr(verification_module, name, rule)
    results, _, exact = run_mode(tiny_small_vocab_pair, mode_drafter, seeded)
    distance = check(results, exact)
    assert (distance >= TOLERANCE).any(), f"TV per position {distance.tolist()}"


@pytest.mark.parametrize("drafters", [("ngram",), ("consensus", "ngram")])
def test_deterministic_drafters_keep_target_distribution(tiny_small_vocab_pair, drafters):
    params = SAMPLING_CASES["plain"]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    # One group: the consensus drafter drafts from the siblings' tokens.
    results, _ = run((tiny_small_vocab_pair.target_path, None), "batched", params, drafters, "g")
    assert (check(results, exact) < TOLERANCE).all(), check(results, exact).tolist()


@pytest.mark.parametrize("rule", list(RULES))
def test_autoregressive_sampling_matches_target_distribution(tiny_small_vocab_pair, rule):
    params = SAMPLING_CASES["top_p"]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    results, _ = run(
        (tiny_small_vocab_pair.target_path, None), "autoregressive", params, (), seeded=RULES[rule]
    )
    assert (check(results, exact) < TOLERANCE).all()


def test_always_accepting_an_unrelated_model_draft_fails_the_distribution_check(
    tiny_small_vocab_pair, unrelated_draft, monkeypatch
):
    """Always accepting the model draft must be caught by the same check (the test can fail)."""
    monkeypatch.setattr(verification_module, "accept_rejection", always_accept)
    params = SAMPLING_CASES["plain"]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    results, _ = run(
        (tiny_small_vocab_pair.target_path, unrelated_draft), "batched", params, seeded=False
    )
    assert (check(results, exact) >= TOLERANCE).any()


def test_same_seed_repeats(tiny_small_vocab_pair):
    config = EngineConfig(model=str(tiny_small_vocab_pair.target_path), drafters=("ngram",))
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=123)
    with Engine(config) as engine:
        first = engine.generate([PROMPT], params)[0].token_ids
        second = engine.generate([PROMPT], params)[0].token_ids
    assert first == second
