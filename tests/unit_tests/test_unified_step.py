"""The unified step: new prompts are fed by the batch's forward, beside decode and drafts.

On the own execution path admission leaves a prompt's uncached tokens in
``SequenceState.unfed_prompt`` and the next forwards feed them ahead of the row's pending
token (``EngineConfig.step_prefill_tokens`` a step, a longer prompt in chunks). Output must
equal plain greedy decoding whatever the chunking, the policy or the drafters, and the
prefix cache and forks must only ever see complete prompt KV.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "a prompt of some forty bytes, fed in parts",
    "short",
    "a third prompt, of middling length",
    "x",
]


def greedy_ref(pair, prompt: str, max_new: int) -> list[int]:
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pair.target.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=2)
    return out[0, ids.shape[1] :].tolist()


def engine_of(pair, **kwargs) -> Engine:
    engine = Engine(EngineConfig(model=str(pair.target_path), **kwargs))
    assert engine.runner.own is not None, "the tiny Llama runs on the own path"
    return engine


@pytest.mark.parametrize("unified", [True, False])
def test_a_new_prompt_needs_no_forward_of_its_own(tiny_pair, unified):
    """Unified: one forward per generated token; prefilled apart: one more per request."""
    params = SamplingParams(max_tokens=6)
    with engine_of(
        tiny_pair, policy="autoregressive", step_prefill_tokens=2048 if unified else 0
    ) as engine:
        [result] = engine.generate([PROMPTS[0]], params)
        forwards = engine.runner.forwards
    assert result.token_ids == greedy_ref(tiny_pair, PROMPTS[0], 6)
    assert forwards == len(result.token_ids) + (0 if unified else 1)


@pytest.mark.parametrize("policy", ["batched", "fcfs_rounds", "autoregressive"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 2048])
def test_chunked_prompts_decode_as_plain_greedy(tiny_pair, policy, chunk):
    params = SamplingParams(max_tokens=12)
    with engine_of(tiny_pair, policy=policy, step_prefill_tokens=chunk) as engine:
        results = engine.generate(PROMPTS, params)
    for prompt, result in zip(PROMPTS, results):
        assert result.token_ids == greedy_ref(tiny_pair, prompt, 12), (prompt, chunk)


def test_a_prompt_admitted_mid_run_joins_the_running_rows_forward(tiny_pair):
    long = SamplingParams(max_tokens=40, ignore_eos=True)
    with engine_of(tiny_pair, step_prefill_tokens=4) as engine:
        first = engine.submit(PROMPTS[2], long)
        deadline = time.monotonic() + 60
        while not any(s.output_ids for s in engine.scheduler.running):
            assert time.monotonic() < deadline and not first.done()
            time.sleep(0.005)
        second = engine.submit(PROMPTS[0], SamplingParams(max_tokens=10))
        assert second.result(timeout=60).token_ids == greedy_ref(tiny_pair, PROMPTS[0], 10)
        assert len(first.result(timeout=60).token_ids) == 40
    ids = tiny_pair.tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    with torch.no_grad():
        out = tiny_pair.target.generate(
            ids, max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=2
        )
    # ignore_eos: the reference must not stop either; compare up to the first EOS.
    reference = out[0, ids.shape[1] :].tolist()
    got = first.result().token_ids
    eos = tiny_pair.tokenizer.eos_token_id
    cut = reference.index(eos) if eos in reference else len(reference)
    assert got[:cut] == reference[:cut]


def test_a_prompt_still_being_fed_is_never_forked(tiny_pair):
    """The same prompt arriving while its first copy is mid-prefill prefills on its own."""
    prompt = "the same prompt twice, long enough to take many one-token steps"
    params = SamplingParams(max_tokens=8)
    with engine_of(tiny_pair, step_prefill_tokens=1) as engine:
        first = engine.submit(prompt, params)
        deadline = time.monotonic() + 60
        while not any(s.unfed_prompt for s in engine.scheduler.running):
            assert time.monotonic() < deadline and not first.done()
            time.sleep(0.001)
        second = engine.submit(prompt, params)
        reference = greedy_ref(tiny_pair, prompt, 8)
        assert first.result(timeout=60).token_ids == reference
        assert second.result(timeout=60).token_ids == reference


def test_a_unified_prefill_enters_the_prefix_cache(tiny_pair):
    head = "a shared header of forty-odd bytes for the cache: "
    params = SamplingParams(max_tokens=6)
    with engine_of(tiny_pair, step_prefill_tokens=8) as engine:
        [first] = engine.generate([head + "one"], params)
        [second] = engine.generate([head + "two"], params)
    assert first.stats.cached_prompt_tokens == 0
    assert second.stats.cached_prompt_tokens >= len(head)
    assert second.token_ids == greedy_ref(tiny_pair, head + "two", 6)


def test_unified_step_with_a_draft_model_is_lossless(tiny_pair):
    params = SamplingParams(max_tokens=12)
    with engine_of(
        tiny_pair, draft_model=str(tiny_pair.draft_path), step_prefill_tokens=5
    ) as engine:
        results = engine.generate(PROMPTS, params)
        accepted = engine.stats().spec.accepted
    for prompt, result in zip(PROMPTS, results):
        assert result.token_ids == greedy_ref(tiny_pair, prompt, 12)
    assert accepted > 0  # the draft model drafted for rows admitted by the unified step


def test_seeded_samples_do_not_depend_on_how_prompts_were_fed(tiny_pair):
    params = [SamplingParams(max_tokens=10, temperature=1.0, seed=s) for s in range(4)]
    outs = []
    for chunk in (0, 3, 2048):
        with engine_of(tiny_pair, step_prefill_tokens=chunk) as engine:
            outs.append([r.token_ids for r in engine.generate(PROMPTS, params)])
    assert outs[0] == outs[1] == outs[2]


def test_the_transformers_path_prefills_at_admission(tiny_pair):
    with Engine(EngineConfig(model=str(tiny_pair.target_path), execution="transformers")) as e:
        assert e.runner.own is None and not e.admitter.defer
        [result] = e.generate([PROMPTS[0]], SamplingParams(max_tokens=6))
    assert result.token_ids == greedy_ref(tiny_pair, PROMPTS[0], 6)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_step_prefill_tokens_is_checked(bad):
    with pytest.raises(ValueError, match="step_prefill_tokens must be an integer >= 0"):
        EngineConfig(model="unused", dtype="float32", step_prefill_tokens=bad)


def run_both(pair, prompts, params, chunk=3, **kwargs):
    """The same requests with prompts fed in ``chunk``-token parts and prefilled apart."""
    outs = []
    for step_prefill_tokens in (chunk, 0):
        with engine_of(pair, step_prefill_tokens=step_prefill_tokens, **kwargs) as engine:
            outs.append(engine.generate(prompts, params))
    return outs


def test_grammar_requests_fed_in_chunks_equal_prefill_apart(tiny_pair):
    from langchain_seed.engine.config import Grammar

    params = SamplingParams(max_tokens=16, grammar=Grammar.regex("(ab|cd)+!"))
    fed, apart = run_both(tiny_pair, PROMPTS, params)
    assert [r.token_ids for r in fed] == [r.token_ids for r in apart]
    # in the language, then the tiny model's EOS (the byte '"')
    assert all(re.fullmatch(r'(ab|cd)+!"?', r.text) for r in fed), [r.text for r in fed]


def test_logprobs_of_requests_fed_in_chunks_equal_prefill_apart(tiny_pair):
    params = SamplingParams(max_tokens=8, logprobs=3)
    fed, apart = run_both(tiny_pair, PROMPTS, params)
    for a, b in zip(fed, apart):
        assert a.token_ids == b.token_ids
        assert a.logprobs is not None and b.logprobs is not None
        assert [(e.token_id, e.logprob, e.top) for e in a.logprobs] == [
            (e.token_id, e.logprob, e.top) for e in b.logprobs
        ]


def test_streaming_while_prompts_are_fed_in_chunks(tiny_pair):
    pieces: list[str] = []
    with engine_of(tiny_pair, step_prefill_tokens=2) as engine:
        future = engine.submit(PROMPTS[0], SamplingParams(max_tokens=10), on_delta=pieces.append)
        result = future.result(timeout=60)
    assert "".join(str(p) for p in pieces) == result.text
    assert result.token_ids == greedy_ref(tiny_pair, PROMPTS[0], 10)


def test_cancelling_a_request_mid_prefill_loses_no_other_request(tiny_pair):
    prompt = "a prompt that takes one step per token to feed, long enough to cancel"
    with engine_of(tiny_pair, step_prefill_tokens=1) as engine:
        doomed = engine.submit(prompt, SamplingParams(max_tokens=8))
        deadline = time.monotonic() + 60
        while not any(s.unfed_prompt for s in engine.scheduler.running):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        other = engine.submit(PROMPTS[1], SamplingParams(max_tokens=8))
        assert doomed.cancel()
        assert other.result(timeout=60).token_ids == greedy_ref(tiny_pair, PROMPTS[1], 8)
        # the engine goes on, and the prefix cache holds no half-fed prompt
        [again] = engine.generate([prompt], SamplingParams(max_tokens=8))
    assert again.token_ids == greedy_ref(tiny_pair, prompt, 8)


def test_a_wholly_cached_prompt_is_fed_nothing_and_holds_no_cache_reference(tiny_pair):
    prompt = "a prompt asked twice, the second time wholly from the prefix cache"
    params = SamplingParams(max_tokens=6)
    with engine_of(tiny_pair, step_prefill_tokens=8) as engine:
        engine.generate([prompt], params)
        [again] = engine.generate([prompt], params)
        held = [n.refs for n in engine.prefix_cache._nodes() if n.refs]
    assert again.stats.cached_prompt_tokens == len(tiny_pair.tokenizer(prompt).input_ids) - 1
    assert again.token_ids == greedy_ref(tiny_pair, prompt, 6)
    assert held == []  # every request's prefix-cache reference was given back
