"""Sampling keeps the target's distribution (DESIGN 4.3), and a broken rule fails the check.

On a 16-token vocabulary the exact marginal distributions of the first three generated
tokens are computed from the target; 1,500 sampled requests through each policy with a
draft model must match them within a total-variation tolerance. The draft is a different
random model, so a rule that ignores p (always accept) lands on the draft's distribution
and fails.
"""

from __future__ import annotations

import pytest
import torch

import langchain_seed.engine.engine as engine_module
from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.verify import process_logits

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


def run(pair_paths, policy: str, params: SamplingParams, drafters=("model",), group=None) -> list:
    target, draft = pair_paths
    config = EngineConfig(
        model=str(target),
        draft_model=str(draft) if "model" in drafters else None,
        policy=policy,
        drafters=drafters,
        max_batch_size=64,
        gamma=3,
        adaptive_gamma=False,
        prefix_cache_tokens=0,
    )
    plist = [
        SamplingParams(
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            max_tokens=3,
            seed=1000 + i,
            ignore_eos=True,
        )
        for i in range(SAMPLES)
    ]
    with Engine(config) as engine:
        return engine.generate([PROMPT] * SAMPLES, plist, group=group)


@pytest.fixture(scope="module")
def unrelated_draft(tiny_small_vocab_pair, tmp_path_factory):
    """A draft with the same vocabulary but unrelated weights (q far from p)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_models import tiny_llama

    model = tiny_llama(len(tiny_small_vocab_pair.tokenizer), seed=77, init=0.6)
    path = tmp_path_factory.mktemp("unrelated")
    model.save_pretrained(path)
    tiny_small_vocab_pair.tokenizer.save_pretrained(path)
    return path


SAMPLING_CASES = {
    "plain": SamplingParams(temperature=1.0),
    "top_k": SamplingParams(temperature=0.8, top_k=5),
    "top_p": SamplingParams(temperature=1.2, top_p=0.7),
}


def tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - b).abs().sum(dim=-1)


@pytest.mark.parametrize("policy", ["fcfs_rounds", "batched"])
@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_model_drafter_sampling_matches_target_distribution(
    tiny_small_vocab_pair, unrelated_draft, policy, case
):
    params = SAMPLING_CASES[case]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    results = run((tiny_small_vocab_pair.target_path, unrelated_draft), policy, params)
    got = empirical_marginals(results, exact.shape[1])
    distance = tv(got, exact)
    assert (distance < TOLERANCE).all(), f"TV per position {distance.tolist()}"


@pytest.mark.parametrize("drafters", [("ngram",), ("consensus", "ngram")])
def test_deterministic_drafters_keep_target_distribution(tiny_small_vocab_pair, drafters):
    pytest.importorskip("langchain_seed.engine.drafters.consensus")
    params = SAMPLING_CASES["plain"]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    # One group: the consensus drafter drafts from the siblings' tokens.
    results = run((tiny_small_vocab_pair.target_path, None), "batched", params, drafters, "g")
    got = empirical_marginals(results, exact.shape[1])
    assert (tv(got, exact) < TOLERANCE).all(), tv(got, exact).tolist()


def test_autoregressive_sampling_matches_target_distribution(tiny_small_vocab_pair):
    params = SAMPLING_CASES["top_p"]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    results = run((tiny_small_vocab_pair.target_path, None), "autoregressive", params, ())
    got = empirical_marginals(results, exact.shape[1])
    assert (tv(got, exact) < TOLERANCE).all()


def test_a_broken_acceptance_rule_fails_the_distribution_check(
    tiny_small_vocab_pair, unrelated_draft, monkeypatch
):
    """Always accepting the draft must be caught by the same check (the test can fail)."""

    def always_accept(p, draft, q, generator):
        return len(draft), int(torch.multinomial(p[len(draft)], 1, generator=generator))

    monkeypatch.setattr(engine_module, "accept_sampling", always_accept)
    params = SAMPLING_CASES["plain"]
    exact = exact_marginals(tiny_small_vocab_pair.target, params)
    results = run((tiny_small_vocab_pair.target_path, unrelated_draft), "batched", params)
    got = empirical_marginals(results, exact.shape[1])
    assert (tv(got, exact) >= TOLERANCE).any()


def test_same_seed_repeats(tiny_small_vocab_pair):
    config = EngineConfig(model=str(tiny_small_vocab_pair.target_path), drafters=("ngram",))
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=123)
    with Engine(config) as engine:
        first = engine.generate([PROMPT], params)[0].token_ids
        second = engine.generate([PROMPT], params)[0].token_ids
    assert first == second
