"""Greedy output of every policy x drafter equals transformers ``generate`` token for token."""

from __future__ import annotations

import time

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams

WORDS = "the cat sat on a mat and then it ran off to see the dog who sat on the log".split()


def make_prompts(n: int = 24) -> list[str]:
    prompts = []
    for i in range(n):
        length = 1 + (i * 7) % 17
        words = [WORDS[(i + j * 3) % len(WORDS)] for j in range(length)]
        if i % 4 == 0:  # repetitive prompts give the n-gram drafter something to find
            words = words * 3
        prompts.append(" ".join(words))
    return prompts


def reference(pair, prompts: list[str], max_new: int) -> list[list[int]]:
    out = []
    for prompt in prompts:
        ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = pair.target.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=2)
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return make_prompts()


@pytest.fixture(scope="module")
def references(tiny_pair, prompts) -> list[list[int]]:
    return reference(tiny_pair, prompts, 20)


DRAFTER_CASES = {
    "none": ((), False),
    "ngram": (("ngram",), False),
    "model": (("model",), True),
}


@pytest.mark.parametrize("policy", ["autoregressive", "fcfs_rounds", "batched"])
@pytest.mark.parametrize("drafter", list(DRAFTER_CASES))
def test_greedy_equals_generate_for_policy_and_drafter_in_three_waves(
    tiny_pair, prompts, references, policy, drafter
):
    drafters, with_draft = DRAFTER_CASES[drafter]
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path) if with_draft else None,
        policy=policy,
        drafters=drafters,
        max_batch_size=8,
        adaptive_gamma=False,
    )
    params = SamplingParams(max_tokens=20)
    with Engine(config) as engine:
        futures = []
        for wave in range(3):  # later waves arrive while earlier ones run
            futures += engine.submit_many(prompts[wave * 8 : (wave + 1) * 8], params)
            time.sleep(0.02)
        results = [f.result(timeout=120) for f in futures]
        stats = engine.stats()
    for result, ref in zip(results, references):
        assert result.token_ids == ref
    if policy != "autoregressive" and drafter == "model":
        assert stats.spec.accepted > 0, "the noisy-copy draft should get some tokens accepted"


def test_adaptive_batched_policy_is_lossless_with_model_and_ngram(tiny_pair, prompts, references):
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path),
        policy="batched",
        drafters=("model", "ngram"),
        max_batch_size=6,
    )
    with Engine(config) as engine:
        results = engine.generate(prompts, SamplingParams(max_tokens=20))
    assert [r.token_ids for r in results] == references
