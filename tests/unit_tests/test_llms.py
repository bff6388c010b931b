"""SeedLLM on a tiny random model: LangChain calls map onto engine requests and back."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.caches import InMemoryCache
from lc_adapter_helpers import Recorder, SpyEngine

from langchain_seed import ChatSeed, SeedLLM
from langchain_seed.engine import SamplingParams

PROMPTS = ["hello", "abc", "the cat", "1 + 1 ="]


@pytest.fixture(scope="module")
def model_path(tiny_pair) -> str:
    return str(tiny_pair.target_path)


@pytest.fixture
def llm(model_path) -> SeedLLM:
    return SeedLLM(model=model_path, max_tokens=8)


def greedy(llm: SeedLLM, prompt: str, **params) -> str:
    """Reference: the engine's own greedy output for one prompt."""
    params = {"max_tokens": 8, **params}
    return llm.engine.generate([prompt], SamplingParams(**params))[0].text


def spied(llm: SeedLLM, **fields) -> tuple[SeedLLM, SpyEngine]:
    spy = SpyEngine(llm.engine)
    return SeedLLM(model=llm.model, max_tokens=8, engine=spy, **fields), spy


def test_invoke_returns_engine_greedy_text(llm):
    assert llm.invoke("hello") == greedy(llm, "hello")


async def test_ainvoke_equals_invoke(llm):
    assert await llm.ainvoke("hello") == llm.invoke("hello")


def test_batch_is_one_engine_submission_with_per_prompt_outputs(llm):
    llm, spy = spied(llm)
    outputs = llm.batch(PROMPTS)
    assert spy.sizes == [len(PROMPTS)]
    assert outputs == [greedy(llm, p) for p in PROMPTS]


def test_batch_honours_max_concurrency_as_submission_size(llm):
    llm, spy = spied(llm)
    outputs = llm.batch(PROMPTS + ["z"], config={"max_concurrency": 2})
    assert spy.sizes == [2, 2, 1]
    assert outputs == [greedy(llm, p) for p in PROMPTS + ["z"]]


async def test_abatch_is_one_engine_submission(llm):
    llm, spy = spied(llm)
    outputs = await llm.abatch(PROMPTS)
    assert spy.sizes == [len(PROMPTS)]
    assert outputs == [greedy(llm, p) for p in PROMPTS]


def test_stream_yields_several_pieces_that_join_to_invoke_text(llm):
    recorder = Recorder()
    pieces = list(llm.stream("hello", config={"callbacks": [recorder]}))
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == llm.invoke("hello")
    assert "".join(recorder.tokens) == "".join(pieces)


async def test_astream_yields_pieces_that_join_to_invoke_text(llm):
    recorder = Recorder()
    pieces = [p async for p in llm.astream("hello", config={"callbacks": [recorder]})]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == llm.invoke("hello")
    assert recorder.tokens == [p for p in pieces if p]


async def test_astream_events_reports_stream_chunks(llm):
    chunks = [
        event["data"]["chunk"]
        async for event in llm.astream_events("hello", version="v2")
        if event["event"] == "on_llm_stream"
    ]
    assert "".join(c.text if hasattr(c, "text") else c for c in chunks) == llm.invoke("hello")


def test_invoke_fires_new_token_callbacks_and_end_with_generation_info(llm):
    recorder = Recorder()
    text = llm.invoke("hello", config={"callbacks": [recorder]})
    assert "".join(recorder.tokens) == text and len(recorder.tokens) > 1
    [generation] = recorder.ends[0].generations[0]
    assert generation.generation_info["finish_reason"] == "length"
    assert generation.generation_info["spec_stats"]["generated_tokens"] == 8


def test_generate_info_carries_finish_reason_model_and_stats(llm):
    result = llm.generate(["hello"])
    info = result.generations[0][0].generation_info
    assert info["finish_reason"] == "length"
    assert info["model_name"] == llm.engine.model_name
    assert info["spec_stats"]["prompt_tokens"] == len(llm.engine.encode("hello"))
    assert result.llm_output["engine_stats"]["requests_finished"] >= 1


def test_stop_string_cuts_output_before_first_occurrence(llm):
    full = greedy(llm, "hello", max_tokens=16)
    stop = full[3:5]
    expected = full[: full.index(stop)]
    assert llm.invoke("hello", max_tokens=16, stop=[stop]) == expected
    assert "".join(llm.stream("hello", max_tokens=16, stop=[stop])) == expected
    assert SeedLLM(model=llm.model, max_tokens=16, stop=[stop]).invoke("hello") == expected


def test_n_samples_per_prompt_run_as_one_group_per_prompt(llm):
    llm, spy = spied(llm)
    result = llm.generate(["hello", "abc"], n=3, temperature=1.0)
    assert [len(row) for row in result.generations] == [3, 3]
    groups = [group for _, group in spy.submissions]
    assert spy.sizes == [3, 3] and None not in groups and groups[0] != groups[1]
    assert len({g.text for g in result.generations[0]}) > 1  # independent samples


def test_seeded_samples_repeat_and_differ_from_each_other(llm):
    first = llm.generate(["hello"], n=3, temperature=1.0, seed=7).generations[0]
    again = llm.generate(["hello"], n=3, temperature=1.0, seed=7).generations[0]
    assert [g.text for g in first] == [g.text for g in again]
    assert len({g.text for g in first}) > 1


def test_call_time_kwargs_override_fields(llm):
    result = llm.generate(["hello"], max_tokens=3)
    assert result.generations[0][0].generation_info["spec_stats"]["generated_tokens"] == 3
    sampled = SeedLLM(model=llm.model, max_tokens=8, temperature=1.0, seed=3)
    assert sampled.invoke("hello", temperature=0.0) == llm.invoke("hello")
    assert len(llm.generate(["hello"], n=2, temperature=1.0).generations[0]) == 2


def test_bound_kwargs_reach_the_engine(llm):
    bound = llm.bind(max_tokens=2)
    assert bound.invoke("hello") == greedy(llm, "hello", max_tokens=2)


def test_unknown_call_argument_is_rejected_by_name(llm):
    with pytest.raises(ValueError, match="frequency_penalty"):
        llm.invoke("hello", frequency_penalty=0.5)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"policy": "fastest"}, "policy"),
        ({"drafters": ("oracle",)}, "drafters"),
        ({"drafters": ("model",)}, "draft_model"),
        ({"gamma": 17}, "gamma"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"gama": 8}, "gama"),  # a misspelt field is refused, not ignored
        ({"adaptive_gamma": False}, "adaptive_gamma"),  # an engine option that is no field
    ],
)
def test_invalid_fields_raise_naming_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        SeedLLM(**fields)


def test_langchain_provider_parameters_are_accepted_and_ignored():
    llm = SeedLLM(api_key="unused", max_retries=2, base_url="http://unused", timeout=5)
    assert llm.request_timeout == 5
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['gama'\].*'gamma'"):
        SeedLLM(gama=8)


def test_engine_fields_reach_the_engine_configuration():
    config = SeedLLM(gamma=8, max_batch_size=32, policy="batched").engine_config()
    assert (config.gamma, config.max_batch_size, config.policy) == (8, 32, "batched")
    assert ChatSeed(llm=SeedLLM(gamma=2)).engine_config().gamma == 2


def test_invalid_call_values_raise_at_the_call(llm):
    with pytest.raises(ValueError, match="temperature"):
        llm.invoke("hello", temperature=-0.5)
    with pytest.raises(ValueError, match="n must be"):
        llm.generate(["hello"], n=0)
    with pytest.raises(ValueError, match="empty"):
        llm.invoke("")
    with pytest.raises(ValueError, match="context"):
        llm.invoke("x" * 2000)


def test_closed_engine_fails_calls_with_engine_closed_error(model_path):
    from langchain_seed.engine import Engine, EngineClosedError, EngineConfig

    engine = Engine(EngineConfig(model=model_path))
    engine.close()
    with pytest.raises(EngineClosedError):
        SeedLLM(engine=engine).invoke("hello")


def test_streaming_more_than_one_sample_is_rejected(llm):
    with pytest.raises(ValueError, match="n must be 1"):
        list(llm.stream("hello", n=2))


def test_equal_configurations_share_one_engine(llm, model_path):
    other = SeedLLM(model=model_path, max_tokens=3, temperature=0.5)
    assert other.engine is llm.engine
    assert SeedLLM(model=model_path, policy="autoregressive").engine is not llm.engine


def test_engine_passed_in_is_used(llm):
    spy = SpyEngine(llm.engine)
    assert SeedLLM(engine=spy).engine is spy
    assert SeedLLM(engine=spy).invoke("hello", max_tokens=8) == greedy(llm, "hello")
    assert len(spy.submissions) == 1


def test_identifying_params_include_sampling_params(llm):
    params = SeedLLM(model=llm.model, temperature=0.7, top_p=0.9, top_k=5, seed=1, n=2)
    ident = params._identifying_params
    assert (ident["temperature"], ident["top_p"], ident["top_k"]) == (0.7, 0.9, 5)
    assert (ident["seed"], ident["n"], ident["max_tokens"]) == (1, 2, 256)
    assert ident["model"] == llm.model


def test_cache_serves_deterministic_calls_only(llm):
    cache = InMemoryCache()
    spy = SpyEngine(llm.engine)
    greedy_llm = SeedLLM(max_tokens=8, engine=spy, cache=cache)
    assert greedy_llm.invoke("hello") == greedy_llm.invoke("hello")
    assert len(spy.submissions) == 1
    seeded = SeedLLM(max_tokens=8, engine=spy, cache=cache, temperature=1.0, seed=4)
    seeded.invoke("hello"), seeded.invoke("hello")
    assert len(spy.submissions) == 2
    sampled = SeedLLM(max_tokens=8, engine=spy, cache=cache, temperature=1.0)
    sampled.invoke("hello"), sampled.invoke("hello")
    assert len(spy.submissions) == 4
    greedy_llm.generate(["hello"], n=2), greedy_llm.generate(["hello"], n=2)
    assert len(spy.submissions) == 6
    greedy_llm.invoke("hello", temperature=1.0), greedy_llm.invoke("hello", temperature=1.0)
    assert len(spy.submissions) == 8  # call-time overrides are not in BaseLLM's cache key


def test_ls_params_name_provider_model_and_sampling(llm):
    params = llm._get_ls_params(stop=["x"])
    assert params["ls_provider"] == "seed" and params["ls_model_type"] == "llm"
    assert params["ls_model_name"] == llm.model and params["ls_max_tokens"] == 8
    assert params["ls_stop"] == ["x"]


def test_get_num_tokens_uses_the_model_tokenizer(llm):
    assert llm.get_num_tokens("hello") == len(llm.engine.encode("hello"))


async def test_concurrent_ainvoke_calls_share_engine_steps(llm):
    engine = llm.engine
    engine.reset_stats()
    outputs = await asyncio.gather(*(llm.ainvoke(p) for p in PROMPTS))
    assert outputs == [greedy(llm, p) for p in PROMPTS]
    assert engine.stats().peak_batch_size >= 2


def test_request_timeout_fails_the_call_with_timeout_error(llm):
    with pytest.raises(TimeoutError, match="request_timeout"):
        SeedLLM(model=llm.model, max_tokens=900, request_timeout=0.05).invoke("hello")


async def wait_for_cancelled(engine, count: int) -> int:
    for _ in range(100):
        if engine.stats().requests_cancelled >= count:
            break
        await asyncio.sleep(0.05)
    return engine.stats().requests_cancelled


async def test_cancelling_ainvoke_cancels_the_engine_request(llm):
    engine = llm.engine
    before = engine.stats().requests_cancelled
    with engine.service.step_lock:  # no step runs: the request cannot finish before the cancel
        task = asyncio.create_task(llm.ainvoke("hello", max_tokens=900))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await wait_for_cancelled(engine, before + 1) == before + 1


async def test_leaving_a_stream_early_cancels_the_engine_request(llm):
    engine = llm.engine
    before = engine.stats().requests_cancelled
    stream = llm.stream("hello", max_tokens=900)
    assert next(stream) is not None
    stream.close()
    assert await wait_for_cancelled(engine, before + 1) == before + 1
