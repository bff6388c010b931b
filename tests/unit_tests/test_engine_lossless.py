"""Greedy output of every policy x drafter equals transformers ``generate`` token for token.

On the tiny Llama pair (every policy and drafter) and on tiny models of other architecture
families (GPT-2: learned absolute positions and a 64-token context; Qwen2: biased q/k/v).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from tiny_models import TinyModel, make_tiny_model

from langchain_seed.engine import Engine, EngineConfig, SamplingParams

DEVICE = os.environ.get("SEED_TEST_DEVICE", "cpu")
"""Where the engine and the reference run: ``SEED_TEST_DEVICE=cuda`` on a GPU
(benchmarks/device_check.py, ``make device-check``)."""

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
    return generate_reference(pair.target, pair.tokenizer, prompts, max_new)


def generate_reference(model, tokenizer, prompts: list[str], max_new: int) -> list[list[int]]:
    """Greedy continuation of each prompt alone, from transformers' ``generate``.

    The engine ends a request at the model's EOS (id 1 in the tiny models) and also at the
    tokenizer's (``</s>``, id 257 in the byte vocabulary); so does this reference.
    """
    eos = sorted({model.generation_config.eos_token_id, tokenizer.eos_token_id})
    model = model.to(DEVICE)
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=2,
            )
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
        device=DEVICE,
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
        device=DEVICE,
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path),
        policy="batched",
        drafters=("model", "ngram"),
        max_batch_size=6,
    )
    with Engine(config) as engine:
        results = engine.generate(prompts, SamplingParams(max_tokens=20))
    assert [r.token_ids for r in results] == references


# ----- other architecture families -------------------------------------------------------
GPT2_CONTEXT = 64  # tiny_gpt2's n_positions
FAMILY_MAX_NEW = 20
FAMILY_GAMMA = 4  # EngineConfig's default gamma
# Different lengths, one byte each token; the repetitive ones give the n-gram drafter long
# drafts. The longest leaves room for max_tokens and a neighbour's full draft in the GPT-2
# context (prompt + max_tokens + gamma <= 65), which a request at the very limit does not:
# see test_gpt2_request_at_the_context_limit_next_to_an_8_token_draft_equals_generate.
FAMILY_PROMPTS = [
    "a",
    "xy",
    "sat on the log",
    "the cat sat on a mat",
    "abcdefghij" * 3,
    "hello world, hello world, hello world",
    "to see the dog who sat on the log and it",
]


FAMILY_NAMES = ("gpt2", "qwen2", "mistral_sliding", "qwen2_sliding")
"""Learned positions (GPT-2), biases (Qwen2), sliding windows of 8 tokens on every layer
(Mistral) and on some layers (Qwen2 with ``layer_types``): prompts and outputs are longer
than the window, so a full causal mask would change the output."""


@pytest.fixture(scope="module")
def family_models(tmp_path_factory) -> dict[str, TinyModel]:
    """Tiny models of each family on the byte vocabulary, each with a noisy-copy draft."""
    root = tmp_path_factory.mktemp("families")
    return {family: make_tiny_model(root, family, seed=0, draft=True) for family in FAMILY_NAMES}


@pytest.fixture(scope="module")
def family_references(family_models) -> dict[str, list[list[int]]]:
    return {
        family: generate_reference(tiny.model, tiny.tokenizer, FAMILY_PROMPTS, FAMILY_MAX_NEW)
        for family, tiny in family_models.items()
    }


def test_family_prompts_leave_room_in_the_gpt2_context(family_models):
    tokenizer = family_models["gpt2"].tokenizer
    assert family_models["gpt2"].model.config.n_positions == GPT2_CONTEXT
    lengths = [len(tokenizer(p).input_ids) for p in FAMILY_PROMPTS]
    assert len(set(lengths)) == len(lengths)  # all different lengths
    assert max(lengths) + FAMILY_MAX_NEW + FAMILY_GAMMA <= GPT2_CONTEXT + 1


FAMILY_DRAFTERS = {
    "none": (),
    "ngram": ("ngram",),
    "consensus": ("consensus", "ngram"),
    "model": ("model",),
}


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("policy", ["autoregressive", "fcfs_rounds", "batched"])
@pytest.mark.parametrize("drafter", list(FAMILY_DRAFTERS))
def test_greedy_equals_generate_for_model_family_policy_and_drafter(
    family_models, family_references, family, policy, drafter
):
    tiny = family_models[family]
    config = EngineConfig(
        device=DEVICE,
        model=str(tiny.path),
        draft_model=str(tiny.draft_path) if drafter == "model" else None,
        policy=policy,
        drafters=FAMILY_DRAFTERS[drafter],
        max_batch_size=8,
        gamma=FAMILY_GAMMA,
        adaptive_gamma=False,
    )
    groups = ["g" if i % 2 else None for i in range(len(FAMILY_PROMPTS))]  # consensus groups
    with Engine(config) as engine:
        results = engine.generate(
            FAMILY_PROMPTS, SamplingParams(max_tokens=FAMILY_MAX_NEW), group=groups
        )
        stats = engine.stats()
    for prompt, result, ref in zip(FAMILY_PROMPTS, results, family_references[family]):
        assert result.token_ids == ref, prompt
    if policy != "autoregressive" and drafter in ("ngram", "model"):  # multi-token verification
        assert stats.spec.drafted > 0


def test_sliding_window_changes_the_output_so_the_family_tests_can_fail(family_models):
    """The same weights with full attention decode differently: the window matters here."""
    tiny = family_models["mistral_sliding"]
    model = tiny.model
    window = model.config.sliding_window
    model.config.sliding_window = None
    try:
        full = generate_reference(model, tiny.tokenizer, FAMILY_PROMPTS, FAMILY_MAX_NEW)
    finally:
        model.config.sliding_window = window
    windowed = generate_reference(model, tiny.tokenizer, FAMILY_PROMPTS, FAMILY_MAX_NEW)
    assert full != windowed


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("layer_types", ["full_attention", "chunked_attention"], "chunked_attention"),
        ("attention_chunk_size", 16, "attention_chunk_size"),
    ],
)
def test_attention_the_engine_cannot_mask_is_refused_naming_the_setting(
    family_models, setting, value, named
):
    from langchain_seed.engine.execution.runner import attention_windows

    model = family_models["qwen2"].model
    old = getattr(model.config, setting, None)
    setattr(model.config, setting, value)
    try:
        with pytest.raises(ValueError, match=named):
            attention_windows(model, "tiny-qwen2")
    finally:
        setattr(model.config, setting, old)


def test_gpt2_request_at_the_context_limit_next_to_an_8_token_draft_equals_generate(
    family_models,
):
    # The first request fits the 64-position context alone (58 + 6 = 64). Its neighbour's
    # prompt repeats a 10-token period, so from the first step the n-gram drafter proposes
    # 8 tokens: the verification forward feeds 9 query positions to every row, and the
    # first request's padded queries must not get positions past n_positions (GPT-2's
    # learned position table has exactly 64 rows).
    tiny = family_models["gpt2"]
    at_limit = "Quick brown foxes jump over lazy dogs while seven owls sit"
    neighbour = "abcdefghij" * 3
    at_limit_len = len(tiny.tokenizer(at_limit).input_ids)
    assert at_limit_len == 58
    params = [SamplingParams(max_tokens=GPT2_CONTEXT - at_limit_len), SamplingParams(max_tokens=16)]
    want = [
        generate_reference(tiny.model, tiny.tokenizer, [at_limit], params[0].max_tokens)[0],
        generate_reference(tiny.model, tiny.tokenizer, [neighbour], params[1].max_tokens)[0],
    ]
    config = EngineConfig(
        device=DEVICE,
        model=str(tiny.path),
        policy="batched",
        drafters=("ngram",),
        max_batch_size=8,
        gamma=8,
        adaptive_gamma=False,
    )
    with Engine(config) as engine:
        alone = engine.generate([at_limit], params[0])[0]
        assert alone.token_ids == want[0]  # it fits the context by itself
        together = engine.generate([at_limit, neighbour], params)
        stats = engine.stats()
    assert [r.token_ids for r in together] == want
    assert len(stats.spec.drafted_by_position) == 8  # the neighbour did draft 8 tokens
