"""Temperature 0 is one answer whatever runs beside it, in float32 and bfloat16 (issue 29).

On the own execution path every kernel computes a row with one order of arithmetic (its
neighbours' number, lengths and drafts never change it), so in every dtype:

- a greedy request's output is the same alone, in a batch and beside sampled requests;
- greedy speculation (every policy and drafter) equals decoding without drafts, token for
  token: a verified draft position computes exactly what a one-token step would;
- a seeded sampled request repeats, alone or in a batch.

The reference here is the engine itself, one request at a time, without drafts (in
float32 the lossless suite also compares with transformers ``generate``).
"""

from __future__ import annotations

import pytest
from tiny_models import make_tiny_model

from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.execution import kernels

pytestmark = pytest.mark.skipif(kernels.load() is None, reason="no C++ compiler here")

WORDS = "the cat sat on a mat and then it ran off to see the dog who sat on the log".split()
PROMPTS = [
    " ".join(WORDS[(i * 5) % 11 : (i * 5) % 11 + 2 + (i * 3) % 9]) * (1 + (i % 3 == 0))
    for i in range(12)
]
MAX_NEW = 24
DTYPES = ["float32", "bfloat16"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("det"), "llama", seed=5, draft=True)


def alone(tiny, dtype: str) -> list[list[int]]:
    """Each prompt decoded alone, no drafts: the reference."""
    config = EngineConfig(
        model=str(tiny.path), dtype=dtype, policy="autoregressive", drafters=(), max_batch_size=1
    )
    with Engine(config) as engine:
        assert engine.runner.deterministic
        return [
            engine.generate([p], SamplingParams(max_tokens=MAX_NEW))[0].token_ids for p in PROMPTS
        ]


@pytest.fixture(scope="module")
def references(tiny):
    return {dtype: alone(tiny, dtype) for dtype in DTYPES}


CASES = {
    "autoregressive": ("autoregressive", ()),
    "batched-ngram": ("batched", ("ngram",)),
    "batched-consensus": ("batched", ("consensus", "ngram")),
    "batched-model": ("batched", ("model", "ngram")),
    "fcfs-model": ("fcfs_rounds", ("model",)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_greedy_in_a_batch_with_speculation_equals_alone_without(tiny, references, dtype, case):
    policy, drafters = CASES[case]
    config = EngineConfig(
        model=str(tiny.path),
        draft_model=str(tiny.draft_path) if "model" in drafters else None,
        dtype=dtype,
        policy=policy,
        drafters=drafters,
        max_batch_size=8,
        gamma=5,
        adaptive_gamma=False,
        deterministic=True,
    )
    groups = ["g" if i % 3 == 0 else None for i in range(len(PROMPTS))]
    with Engine(config) as engine:
        results = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_NEW), group=groups)
        stats = engine.stats()
    assert [r.token_ids for r in results] == references[dtype]
    if policy != "autoregressive":
        assert stats.spec.drafted > 0  # verification fed several positions a row


@pytest.mark.parametrize("dtype", DTYPES)
def test_greedy_beside_sampled_neighbours_equals_alone(tiny, references, dtype):
    config = EngineConfig(model=str(tiny.path), dtype=dtype, max_batch_size=16)
    greedy = SamplingParams(max_tokens=MAX_NEW)
    sampled = SamplingParams(max_tokens=MAX_NEW + 9, temperature=0.9, top_p=0.95)
    with Engine(config) as engine:
        noise = engine.submit_many(["it ran off", "a mat"] * 4, sampled)
        results = engine.generate(PROMPTS, greedy)
        for f in noise:
            f.result(timeout=60)
    assert [r.token_ids for r in results] == references[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_seeded_sample_repeats_alone_and_in_a_batch(tiny, dtype):
    params = SamplingParams(max_tokens=MAX_NEW, temperature=0.8, seed=11)
    config = EngineConfig(model=str(tiny.path), dtype=dtype, max_batch_size=8)
    with Engine(config) as engine:
        single = engine.generate([PROMPTS[3]], params)[0].token_ids
        batch = engine.generate(PROMPTS[:6], [*[SamplingParams(max_tokens=9)] * 3, params,
                                              *[SamplingParams(max_tokens=30)] * 2])  # fmt: skip
    assert batch[3].token_ids == single


def test_deterministic_true_is_refused_on_the_transformers_forward(tmp_path):
    gpt2 = make_tiny_model(tmp_path, "gpt2", seed=0)
    with pytest.raises(ValueError, match="deterministic=True needs the own execution path"):
        Engine(EngineConfig(model=str(gpt2.path), deterministic=True))
    with Engine(EngineConfig(model=str(gpt2.path))) as engine:  # auto: allowed, not invariant
        assert not engine.runner.deterministic


def test_deterministic_false_may_take_library_kernels_and_stays_correct(tiny, references):
    config = EngineConfig(
        model=str(tiny.path), dtype="float32", deterministic=False, policy="autoregressive"
    )
    with Engine(config) as engine:
        assert not engine.runner.deterministic
        results = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_NEW))
    # float32: library kernels differ in rounding only; these prompts have no near-ties
    assert [r.token_ids for r in results] == references["float32"]


def test_the_langchain_classes_pass_execution_and_determinism_to_the_engine(tiny):
    from langchain_seed import ChatSeed, SeedLLM

    llm = SeedLLM(model=str(tiny.path), execution="transformers", max_tokens=4)
    config = llm.engine_config()
    assert config.execution == "transformers" and config.deterministic is None
    chat = ChatSeed(model=str(tiny.path), deterministic=True, dtype="bfloat16")
    assert chat.engine_config().deterministic is True
    assert chat.engine.runner.deterministic  # the own path, invariant in bfloat16
    with pytest.raises(ValueError, match="execution"):
        SeedLLM(model=str(tiny.path), execution="fast")
