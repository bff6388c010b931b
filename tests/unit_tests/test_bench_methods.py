"""Benchmark methods end to end on tiny random models: every method runs the batch workload
and, greedy, produces the same tokens as the sequential transformers loop."""

from __future__ import annotations

import pytest

from langchain_seed.bench.backends import STAT_KEYS, BenchConfig
from langchain_seed.bench.harness import run_workload
from langchain_seed.bench.methods import make_method
from langchain_seed.engine.config import SamplingParams

pytestmark = pytest.mark.slow  # tiny models, ~10 s on an idle 2-core CPU

PROMPTS = ["hello there", "the cat sat on the mat, the cat sat", "abc abc abc abc", "x"]


class TinyBatch:
    """The batch workload over fixed byte prompts (no data files, no chat template)."""

    name = "tiny-batch"
    description = "tiny"
    compare_outputs = True
    reference = "sequential"
    baselines = ("sequential", "batched_ar")
    methods = ()

    def warmup(self, backend) -> None:
        backend.generate([backend.encode("hi")], SamplingParams(max_tokens=2))

    def run(self, backend):
        from langchain_seed.bench.results import RunOutput

        out = backend.generate([backend.encode(p) for p in PROMPTS], SamplingParams(max_tokens=12))
        ids = [row[0].token_ids for row in out]
        return RunOutput(ids, sum(map(len, ids)), backend.stats(), dict(backend.info))


@pytest.fixture(scope="module")
def config(tiny_pair) -> BenchConfig:
    return BenchConfig(model=str(tiny_pair.target_path), hf_batch_size=2, max_batch_size=4)


def test_hf_methods_agree_greedily_and_count_forwards(config: BenchConfig) -> None:
    methods = [make_method(m, config) for m in ("sequential", "hf_batched", "hf_assisted")]
    result = run_workload(TinyBatch(), methods, repeats=1)
    assert not [s.error for s in result.methods if s.error]
    seq = result.summary("sequential")
    assert seq is not None
    assert set(STAT_KEYS) <= set(seq.stats)
    assert seq.stats["calls"] == len(PROMPTS)
    # one sequence per forward: one forward per generated token
    assert seq.stats["target_forwards"] == seq.generated_tokens
    assert result.summary("hf_batched").stats["target_forwards"] < seq.generated_tokens  # type: ignore[union-attr]
    for name in ("hf_batched", "hf_assisted"):
        assert result.summary(name).outputs_equal is True, result.warnings  # type: ignore[union-attr]


def test_engine_methods_match_sequential_greedy(config: BenchConfig) -> None:
    names = ("sequential", "seed_fcfs", "batched_ar", "ours")
    result = run_workload(TinyBatch(), [make_method(m, config) for m in names], repeats=1)
    assert not [s.error for s in result.methods if s.error], result.warnings
    for name in names[1:]:
        summary = result.summary(name)
        assert summary is not None
        assert summary.outputs_equal is True, result.warnings
        assert summary.info["kind"] == "engine"
        assert summary.stats["calls"] == len(PROMPTS)
    assert result.summary("batched_ar").info["speculates"] is False  # type: ignore[union-attr]
    assert result.summary("seed_fcfs").info["prefix_cache_tokens"] == 0  # type: ignore[union-attr]


def test_samples_are_grouped_and_distinct_per_seed(config: BenchConfig) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=3)
    for name in ("sequential", "hf_batched", "ours"):
        backend = make_method(name, config).open()
        try:
            rows = backend.generate([backend.encode("abc")], params, n=3)
            assert len(rows) == 1 and len(rows[0]) == 3
            assert len({tuple(c.token_ids) for c in rows[0]}) > 1, name
        finally:
            backend.close()


def test_transformers_llm_serves_a_runnable_batch_fallback(config: BenchConfig) -> None:
    backend = make_method("hf_batched", config).open()
    try:
        llm = backend.llm(SamplingParams(max_tokens=5), budget=lambda p: 3 if p == "b" else None)
        texts = llm.batch(["a", "a", "b", "b"])
        assert len(texts) == 4
        assert texts[0] == texts[1]  # greedy samples of one prompt are equal
        assert backend.stats()["calls"] == 4
        ids = backend.generate([backend.encode("b")], SamplingParams(max_tokens=3))
        assert texts[2] == ids[0][0].text  # the budget of prompt "b" was 3 tokens
    finally:
        backend.close()
