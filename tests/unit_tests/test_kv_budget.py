"""KV memory is bounded by ``max_cache_tokens``: the pool's allocated bytes, never only counters.

The bound: ``max_cache_tokens`` slots times one token's keys and values over all layers
(``layers x 2 x kv_heads x head_dim x element size``), per model. Every test reads the
bytes of the pool's storages after every forward.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_model

from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.execution.kv_cache import SlotCache

BUDGET = 1024


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("kv"), "llama", seed=3, draft=True)


def token_bytes(model) -> int:
    """Bytes of one token's keys and values over all layers."""
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 4


def watch_pool(engine: Engine) -> list[int]:
    """Record every model's pool bytes after every forward of the engine."""
    seen: list[int] = []
    for runner in engine.runners.values():
        forward = runner.forward

        def watched(*args, _forward=forward, **kwargs):
            out = _forward(*args, **kwargs)
            seen.append(sum(r.cache.nbytes() for r in engine.runners.values()))
            return out

        runner.forward = watched  # type: ignore[method-assign]
    return seen


def greedy(tiny, prompt: str, n: int) -> list[int]:
    """Plain greedy decoding that goes on past EOS (the requests set ``ignore_eos``)."""
    ids = tiny.tokenizer(prompt, return_tensors="pt").input_ids
    out: list[int] = []
    with torch.no_grad():
        result = tiny.model(ids, use_cache=True)
        for _ in range(n):
            out.append(int(result.logits[0, -1].argmax()))
            result = tiny.model(
                torch.tensor([[out[-1]]]), past_key_values=result.past_key_values, use_cache=True
            )
    return out


def config(tiny, **kwargs) -> EngineConfig:
    base = dict(model=str(tiny.path), max_cache_tokens=BUDGET, prefix_cache_tokens=0)
    base.update(kwargs)
    return EngineConfig(**base)


def test_one_long_request_never_allocates_past_the_budget(tiny):
    prompt = "the quick brown fox jumps over the lazy dog " * 14  # ~630 byte tokens
    params = SamplingParams(max_tokens=300, ignore_eos=True)
    with Engine(config(tiny, drafters=("ngram",))) as engine:
        seen = watch_pool(engine)
        [result] = engine.generate([prompt], params)
        budget_bytes = BUDGET * token_bytes(tiny.model)
        assert engine.runner.cache.budget_bytes() == budget_bytes
        assert seen and max(seen) <= budget_bytes
        stats = engine.stats()
    assert result.token_ids == greedy(tiny, prompt, 300)
    assert stats.kv_budget_bytes == budget_bytes


def test_sixteen_rows_wait_for_room_and_stay_within_the_budget(tiny):
    """16 requests of ~150 reserved tokens cannot all run under 1,024 tokens: some wait."""
    prompts = [f"request {i}: the cat sat on the mat" for i in range(16)]
    params = SamplingParams(max_tokens=96, ignore_eos=True)
    cfg = config(
        tiny, max_batch_size=16, drafters=("model", "ngram"), draft_model=str(tiny.draft_path)
    )
    with Engine(cfg) as engine:
        seen = watch_pool(engine)
        results = engine.generate(prompts, params)
        stats = engine.stats()
        pools = len(engine.runners)
    assert stats.requests_finished == 16
    assert 1 < stats.peak_batch_size < 16  # the budget, not max_batch_size, limited the batch
    assert max(seen) <= pools * BUDGET * token_bytes(tiny.model)
    for prompt, result in zip(prompts[:4], results[:4]):
        assert result.token_ids == greedy(tiny, prompt, 96)


def test_prefix_cache_full_keeps_its_own_stated_budget_in_bytes(tiny):
    prefix_budget = 256
    prompts = [f"{i} " + "a shared header for every prompt here " * 3 for i in range(12)]
    cfg = config(tiny, prefix_cache_tokens=prefix_budget, max_batch_size=4)
    with Engine(cfg) as engine:
        seen = watch_pool(engine)
        engine.generate(prompts, SamplingParams(max_tokens=8))
        prefix = engine.prefix_cache.stats()
    per_token = token_bytes(tiny.model)
    assert prefix["evictions"] > 0  # the cache filled and evicted
    assert prefix["tokens_stored"] <= prefix_budget
    assert prefix["memory_bytes"] <= prefix_budget * per_token
    assert max(seen) <= BUDGET * per_token


def test_idle_engine_frees_its_pool(tiny):
    with Engine(config(tiny)) as engine:
        engine.generate(["hello there"], SamplingParams(max_tokens=4))
        assert engine.runner.cache.nbytes() == 0  # idle after the request: pool freed


def test_growing_the_layout_while_rows_run_keeps_their_kv(tiny):
    """A long request joins a batch of short ones: the capacity grows with rows live."""
    short = ["ab", "the cat", "xyz xyz"]
    long = "a much longer prompt that needs a wider row " * 6
    with Engine(config(tiny, max_batch_size=8, drafters=("ngram",))) as engine:
        first = [engine.submit(p, SamplingParams(max_tokens=60, ignore_eos=True)) for p in short]
        while engine.stats().steps < 3:  # the short ones are running
            pass
        second = engine.submit(long, SamplingParams(max_tokens=40, ignore_eos=True))
        results = [f.result() for f in first] + [second.result()]
        steps = engine.stats().steps
    assert steps > 3
    for prompt, result, n in zip([*short, long], results, [60, 60, 60, 40]):
        assert result.token_ids == greedy(tiny, prompt, n), prompt


def test_layout_moves_rows_in_place_both_ways():
    cache = SlotCache(num_layers=1, max_rows=4, budget_tokens=512)
    cache.layout(64, live_rows=0)
    keys = torch.randn(4, 2, 64, 8)
    for row in range(4):
        cache.write(row, 0, [(keys[row], keys[row] * 2)])
        cache.set_length(row, 10 + row)
    cache.layout(128, live_rows=4)  # grow: rows move towards the end of the pool
    for row in range(4):
        [(k, v)] = cache.read(row, 0, 10 + row)
        assert torch.equal(k, keys[row, :, : 10 + row]) and torch.equal(v, 2 * k)
    cache.layout(64, live_rows=3)  # shrink: rows move back, row 3 is dropped
    for row in range(3):
        [(k, _)] = cache.read(row, 0, 10 + row)
        assert torch.equal(k, keys[row, :, : 10 + row])
    assert cache.nbytes() == 2 * 512 * 2 * 8 * 4
    with pytest.raises(ValueError, match="exceed the KV budget"):
        cache.layout(256, live_rows=3)
