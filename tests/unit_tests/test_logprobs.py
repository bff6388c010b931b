"""Log probabilities of generated tokens (``SamplingParams.logprobs``) on tiny models.

What they are: the log probability of each emitted token under the distribution the
sampler draws from (grammar mask, temperature, top-k, top-p), greedy rows at temperature 1;
the top alternatives of that distribution; the same values with and without speculation.
"""

from __future__ import annotations

import math

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams, TextDelta, TokenLogprob
from langchain_seed.engine.speculation.sampling import process_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["the cat sat on the mat the cat sat on", "abcabcabcabc", "hello hello hello"]


def engine_for(pair, **config) -> Engine:
    return Engine(EngineConfig(model=str(pair.target_path), **config))


def reference_logprobs(model, prompt_ids, output_ids, params) -> torch.Tensor:
    """``[len(output), vocab]`` log probabilities of one full transformers forward."""
    ids = torch.tensor([prompt_ids + output_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()  # [t, vocab]
    if params.greedy:
        return logits.log_softmax(dim=-1)
    return process_scores(logits, params).log_softmax(dim=-1)


@pytest.mark.parametrize("bad", [-1, 21, True, 1.5, "3"])
def test_logprobs_out_of_range_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=bad)


def test_results_have_no_logprobs_unless_asked(tiny_pair):
    engine = engine_for(tiny_pair)
    try:
        [plain] = engine.generate(["hello"], SamplingParams(max_tokens=4))
        [asked] = engine.generate(["hello"], SamplingParams(max_tokens=4, logprobs=0))
    finally:
        engine.close()
    assert plain.logprobs is None
    assert [e.token_id for e in asked.logprobs] == asked.token_ids
    assert all(e.top == () for e in asked.logprobs)
    assert asked.to_dict()["logprobs"][0]["token_id"] == asked.token_ids[0]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=12, logprobs=3, ignore_eos=True),
        SamplingParams(
            max_tokens=12, logprobs=4, temperature=0.7, top_k=30, top_p=0.9, seed=3, ignore_eos=True
        ),
    ],
    ids=["greedy", "sampled"],
)
def test_logprobs_are_those_of_the_distribution_the_sampler_draws_from(tiny_pair, params):
    engine = engine_for(tiny_pair, execution="transformers")
    try:
        results = engine.generate(PROMPTS, params)
        ids = [engine.encode(p) for p in PROMPTS]
    finally:
        engine.close()
    for prompt_ids, result in zip(ids, results):
        ref = reference_logprobs(tiny_pair.target, prompt_ids, result.token_ids, params)
        assert len(result.logprobs) == len(result.token_ids)
        for t, (token, entry) in enumerate(zip(result.token_ids, result.logprobs)):
            assert entry.token_id == token
            assert entry.logprob == pytest.approx(ref[t, token].item(), abs=1e-4)
            values, indices = ref[t].topk(params.logprobs)
            assert [i for i, _ in entry.top] == indices.tolist()
            assert [v for _, v in entry.top] == pytest.approx(values.tolist(), abs=1e-4)
            if params.greedy:  # the greedy token is the most likely one
                assert entry.top[0][0] == token


@pytest.mark.parametrize("execution", ["own", "transformers"])
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=24, logprobs=3, ignore_eos=True),
        SamplingParams(
            max_tokens=24, logprobs=2, temperature=0.8, top_k=20, seed=5, ignore_eos=True
        ),
    ],
    ids=["greedy", "seeded"],
)
def test_speculation_leaves_the_logprobs_unchanged(tiny_pair, execution, params):
    """Drafted and verified tokens get the logprobs of plain one-token decoding.

    On the own execution path a row's logits do not depend on how many positions the step
    feeds, so the values are equal bit for bit; the transformers forward rounds by shape.
    """
    runs = {}
    for name, config in [
        ("plain", {"policy": "autoregressive"}),
        (
            "drafted",
            {
                "policy": "batched",
                "drafters": ("model", "ngram"),
                "draft_model": str(tiny_pair.draft_path),
                "adaptive_gamma": False,
            },
        ),
    ]:
        try:
            engine = engine_for(tiny_pair, execution=execution, **config)
        except ValueError as exc:  # the own path is not possible here
            pytest.skip(str(exc))
        try:
            runs[name] = engine.generate(PROMPTS, params)
        finally:
            engine.close()
    assert max(r.stats.mean_accepted_length for r in runs["drafted"]) > 1.5  # drafts were used
    for plain, drafted in zip(runs["plain"], runs["drafted"]):
        assert plain.token_ids == drafted.token_ids
        if execution == "own":
            assert plain.logprobs == drafted.logprobs
        else:
            for a, b in zip(plain.logprobs, drafted.logprobs):
                assert a.token_id == b.token_id
                assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_grammar_masked_tokens_have_no_probability(grammar_pair):
    from langchain_seed.engine.config import Grammar

    pytest.importorskip("xgrammar")
    engine = engine_for(grammar_pair)
    try:
        params = SamplingParams(max_tokens=6, logprobs=5, grammar=Grammar.regex("[ab]+"))
        [result] = engine.generate(["write a or b"], params)
        allowed = {engine.chat.encode_text(c)[0] for c in "ab"} | engine.eos_ids
    finally:
        engine.close()
    for entry in result.logprobs:
        assert {token for token, _ in entry.top} <= allowed
        # the allowed tokens' probabilities add up to one: the mask renormalised them
        assert sum(math.exp(v) for _, v in entry.top) == pytest.approx(1.0, abs=1e-4)


def test_streamed_pieces_carry_each_entry_once_in_order(tiny_pair):
    engine = engine_for(tiny_pair)
    pieces: list[str] = []
    try:
        future = engine.submit(
            "hello", SamplingParams(max_tokens=16, logprobs=1), on_delta=pieces.append
        )
        result = future.result(timeout=60)
    finally:
        engine.close()
    assert pieces and all(isinstance(p, TextDelta) for p in pieces)
    streamed = [e for p in pieces for e in p.logprobs]
    assert streamed == result.logprobs[: len(streamed)]
    assert "".join(pieces) == result.text


def test_a_stop_string_cuts_the_logprobs_with_the_tokens(tiny_pair):
    engine = engine_for(tiny_pair)
    try:
        [free] = engine.generate(["hello"], SamplingParams(max_tokens=12, ignore_eos=True))
        stop = free.text[3:5]
        params = SamplingParams(max_tokens=12, ignore_eos=True, stop=(stop,), logprobs=0)
        [cut] = engine.generate(["hello"], params)
    finally:
        engine.close()
    assert len(cut.token_ids) < len(free.token_ids)
    assert [e.token_id for e in cut.logprobs] == cut.token_ids


def test_token_logprob_is_plain_data():
    entry = TokenLogprob(5, -0.25, ((5, -0.25), (7, -1.5)))
    assert entry.to_dict() == {"token_id": 5, "logprob": -0.25, "top": [[5, -0.25], [7, -1.5]]}
