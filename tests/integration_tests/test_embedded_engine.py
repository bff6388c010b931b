"""The embedded SmolLM2-135M-Instruct through the engine: loading, caching, lossless greedy."""

from __future__ import annotations

import json
import time

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.execution.loading import EMBEDDED_NAME, load_model


def gsm8k_chat_prompts(tokenizer, data_dir, n: int) -> list[list[int]]:
    rows = [json.loads(line) for line in (data_dir / "gsm8k_test_0_999.jsonl").open()][:n]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["question"]}], add_generation_prompt=True, tokenize=True
        )
        for r in rows
    ]


def test_embedded_default_loads_from_the_safetensors_cache(embedded_model):
    assert embedded_model.name == EMBEDDED_NAME
    assert embedded_model.source == "embedded"
    again = load_model(None)
    assert again.load_seconds < 5.0  # the converted weights are cached


@pytest.fixture(scope="module")
def gsm8k_ids(embedded_model, shared_data_dir):
    ids = gsm8k_chat_prompts(embedded_model.tokenizer, shared_data_dir, 8)
    return [list(x["input_ids"]) if hasattr(x, "keys") else list(x) for x in ids]


@pytest.fixture(scope="module")
def gsm8k_refs(embedded_model, gsm8k_ids):
    refs = []
    for ids in gsm8k_ids:
        with torch.no_grad():
            out = embedded_model.model.generate(
                torch.tensor([ids]), max_new_tokens=32, do_sample=False
            )
        refs.append(out[0, len(ids) :].tolist())
    return refs


@pytest.mark.parametrize(
    ("policy", "drafters"),
    [("autoregressive", ()), ("fcfs_rounds", ("ngram",)), ("batched", ("ngram",))],
)
def test_embedded_greedy_equals_generate_on_gsm8k(gsm8k_ids, gsm8k_refs, policy, drafters):
    config = EngineConfig(policy=policy, drafters=drafters, max_batch_size=8, dtype="float32")
    t0 = time.perf_counter()
    with Engine(config) as engine:
        results = engine.generate(gsm8k_ids, SamplingParams(max_tokens=32))
    assert [r.token_ids for r in results] == gsm8k_refs, f"{policy} diverged"
    assert time.perf_counter() - t0 > 0


def test_auto_dtype_is_bfloat16_on_a_cpu_with_native_bfloat16():
    from langchain_seed.engine.execution.loading import cpu_has_native_bf16

    expected = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert EngineConfig().dtype == expected
    assert EngineConfig(dtype="float32").dtype == "float32"


def test_bfloat16_batched_greedy_equals_bfloat16_one_at_a_time(gsm8k_ids):
    """On the own execution path a row computes the same alone or in a batch, in bfloat16
    too, so greedy outputs are identical; on the transformers forward (no C++ compiler, or
    a model it does not cover) a batch changes rounding and a near-tie may flip: there the
    share of identical outputs is reported and a broken path caught."""
    config = EngineConfig(policy="batched", drafters=("ngram",), max_batch_size=8, dtype="bfloat16")
    params = SamplingParams(max_tokens=32)
    with Engine(config) as engine:
        batched = [r.token_ids for r in engine.generate(gsm8k_ids, params)]
        alone = [engine.generate([ids], params)[0].token_ids for ids in gsm8k_ids]
        execution = engine.runner.execution
    same = sum(a == b for a, b in zip(batched, alone)) / len(alone)
    print(f"bfloat16 on the {execution} path: {same:.0%} of greedy outputs identical alone")
    if execution == "own":
        assert batched == alone
    else:
        assert same >= 0.5
