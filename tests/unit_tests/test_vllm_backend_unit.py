"""The vLLM backend's translation layer, and the reasoning layer's path for models that take n.

No vLLM needed: these run in the main venv (the real engines run in tests/vllm_tests).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_seed import SeedLLM, SelfConsistency
from langchain_seed.backends.vllm_requests import (
    CPU_KV_CACHE_BYTES,
    engine_kwargs,
    group_requests,
    sampling_kwargs,
    structured_outputs_kwargs,
)
from langchain_seed.engine import SamplingParams
from langchain_seed.engine.config import Grammar
from langchain_seed.model_calls import ModelCall, call_model, takes_n
from langchain_seed.tree_of_thoughts import TreeOfThoughts

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def test_sampling_params_map_to_vllm_fields() -> None:
    params = SamplingParams(
        temperature=0.7, top_p=0.9, top_k=20, max_tokens=33, stop=("\n\n",),
        stop_token_ids=(7,), seed=4,
    )  # fmt: skip
    assert sampling_kwargs(params, n=3) == {
        "n": 3, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "max_tokens": 33,
        "stop": ["\n\n"], "stop_token_ids": [7], "ignore_eos": False, "seed": 4,
        "logprobs": None,
    }  # fmt: skip
    greedy = sampling_kwargs(SamplingParams())
    assert greedy["temperature"] == 0.0 and greedy["top_k"] == 0 and greedy["seed"] is None


@pytest.mark.parametrize(
    ("grammar", "expected"),
    [
        (Grammar.json_object(), {"json_object": True}),
        (Grammar.regex("[0-9]+"), {"regex": "[0-9]+"}),
        (Grammar.ebnf('root ::= "a"'), {"grammar": 'root ::= "a"'}),
        (Grammar.json_schema({"type": "integer"}), {"json": '{"type": "integer"}'}),
    ],
)
def test_grammars_map_to_structured_outputs(grammar: Grammar, expected: dict[str, Any]) -> None:
    assert structured_outputs_kwargs(grammar) == expected


def test_structural_tag_maps_to_its_field() -> None:
    tag = Grammar.structural_tag({"type": "structural_tag", "format": {"type": "any_text"}})
    assert structured_outputs_kwargs(tag) == {"structural_tag": tag.spec}


def test_engine_kwargs_defaults_and_overrides() -> None:
    on_cpu = engine_kwargs("/m", "float32", {}, on_cpu=True, model_context=8192)
    assert on_cpu == {
        "model": "/m", "dtype": "float32", "logprobs_mode": "processed_logprobs",
        "kv_cache_memory_bytes": CPU_KV_CACHE_BYTES,
        "enable_chunked_prefill": False, "max_num_batched_tokens": 8192,
    }  # fmt: skip
    on_gpu = engine_kwargs("/m", "auto", {}, on_cpu=False)
    assert on_gpu == {"model": "/m", "dtype": "auto", "logprobs_mode": "processed_logprobs"}
    # the step budget covers max_model_len when given, the default when nothing is known
    short = engine_kwargs("/m", "auto", {"max_model_len": 4096}, on_cpu=True, model_context=8192)
    assert short["max_num_batched_tokens"] == 4096
    assert engine_kwargs("/m", "auto", {}, on_cpu=True)["max_num_batched_tokens"] == 32768
    theirs = {"gpu_memory_utilization": 0.5, "dtype": "half", "enable_chunked_prefill": True}
    mine = engine_kwargs("/m", "auto", theirs, on_cpu=True)
    assert mine == {
        "model": "/m", "dtype": "half", "logprobs_mode": "processed_logprobs", **theirs
    }  # fmt: skip


def test_group_requests_packs_the_samples_of_one_prompt() -> None:
    base = SamplingParams(temperature=0.8, seed=10)
    samples = [SamplingParams(temperature=0.8, seed=10 + j) for j in range(3)]
    ids = [[1, 2]] * 3 + [[3]] * 2
    params = samples + [base, SamplingParams(temperature=0.8, seed=11)]
    groups = ["a"] * 3 + ["b"] * 2
    assert group_requests(ids, params, groups, streaming=False) == [[0, 1, 2], [3, 4]]
    # unseeded samples of a group pack too; prompts outside a group never do
    unseeded = [SamplingParams(temperature=1.0)] * 3
    assert group_requests([[1]] * 3, unseeded, ["g"] * 3, streaming=False) == [[0, 1, 2]]
    assert group_requests([[1]] * 3, unseeded, [None] * 3, streaming=False) == [[0], [1], [2]]
    # another seed rule, another prompt, or streaming: separate requests
    odd = [SamplingParams(seed=1), SamplingParams(seed=5)]
    assert group_requests([[1]] * 2, odd, ["g"] * 2, streaming=False) == [[0], [1]]
    assert group_requests([[1], [2]], unseeded[:2], ["g"] * 2, streaming=False) == [[0], [1]]
    assert group_requests([[1]] * 2, unseeded[:2], ["g"] * 2, streaming=True) == [[0], [1]]


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_names_the_install_command() -> None:
    with pytest.raises(ImportError, match="pip install vllm"):
        SeedLLM(backend="vllm")


def test_backend_kwargs_belong_to_the_vllm_backend() -> None:
    with pytest.raises(ValueError, match="backend_kwargs are for backend='vllm'"):
        SeedLLM(backend_kwargs={"tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="backend"):
        SeedLLM(backend="tgi")  # type: ignore[arg-type]


class NChat(BaseChatModel):
    """A chat model that draws ``n`` samples per request, like ChatOpenAI; records calls."""

    n: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    ignore_n: bool = False
    delay: float = 0.0
    calls: list[dict[str, Any]] = []
    in_flight: int = 0
    most_in_flight: int = 0
    lock: Any = None

    @property
    def _llm_type(self) -> str:
        return "n-chat"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        lock = self.lock or threading.Lock()
        with lock:
            self.calls.append(dict(kw, stop=stop, prompt=str(messages[-1].content)))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        with lock:
            self.in_flight -= 1
        n = 1 if self.ignore_n else kw.get("n", self.n)
        texts = [f"The answer is {j % 2}." for j in range(n)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(t)) for t in texts])


def _nchat(**kwargs: Any) -> NChat:
    return NChat(calls=[], lock=threading.Lock(), **kwargs)


def test_models_with_an_n_field_take_n() -> None:
    assert takes_n(_nchat())
    assert not takes_n(SeedLLM())


def test_self_consistency_sends_one_request_with_n_per_question() -> None:
    chat = _nchat(delay=0.05)
    sc = SelfConsistency(llm=chat, n=5, temperature=0.6, max_tokens=40, seed=9)
    outs = sc.batch([{"question": "one?"}, {"question": "two?"}, {"question": "three?"}])
    assert len(chat.calls) == 3
    assert all(
        c["n"] == 5 and c["temperature"] == 0.6 and c["max_tokens"] == 40 and c["seed"] == 9
        for c in chat.calls
    )
    assert chat.most_in_flight == 3
    assert [len(o["samples"]) for o in outs] == [5, 5, 5]
    assert outs[0]["votes"] == {"0": 3, "1": 2}


def test_max_concurrency_bounds_the_requests_in_flight() -> None:
    chat = _nchat(delay=0.05)
    call = ModelCall(prompts=[f"q{i}" for i in range(6)], n=2)
    result = call_model(chat, call, {"max_concurrency": 2})
    assert len(result.samples) == 6 and all(len(row) == 2 for row in result.samples)
    assert chat.most_in_flight <= 2 and len(chat.calls) == 6


async def test_async_path_sends_n_too() -> None:
    chat = _nchat()
    sc = SelfConsistency(llm=chat, n=4)
    out = await sc.ainvoke({"question": "q?"})
    assert len(out["samples"]) == 4 and len(chat.calls) == 1 and chat.calls[0]["n"] == 4


def test_greedy_calls_send_one_sample_and_repeat_it() -> None:
    chat = _nchat()
    result = call_model(chat, ModelCall(prompts=["q"], n=3, temperature=0.0), {})
    assert chat.calls[0]["n"] == 1 and result.texts == [["The answer is 0."] * 3]
    greedy_model = _nchat(temperature=0.0)
    call_model(greedy_model, ModelCall(prompts=["q"], n=2), {})
    assert greedy_model.calls[0]["n"] == 1


def test_a_model_that_ignores_n_is_reported() -> None:
    sc = SelfConsistency(llm=_nchat(ignore_n=True), n=3)
    with pytest.raises(RuntimeError, match="n=3"):
        sc.invoke({"question": "q?"})


def test_stop_strings_cut_for_models_that_ignore_them() -> None:
    result = call_model(_nchat(), ModelCall(prompts=["q"], n=2, stop=[" is"]), {})
    assert result.texts == [["The answer", "The answer"]]


def test_tree_of_thoughts_runs_on_a_model_that_takes_n() -> None:
    chat = _nchat()
    tot = TreeOfThoughts.from_task("game24", llm=chat, breadth=1, steps=1, n_evaluate_sample=2)
    out = tot.invoke({"input": "4 5 6 10"})
    assert out["stats"]["model_submissions"] >= 1
    assert chat.calls and all("n" in c for c in chat.calls)


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_cli_backend_option_reaches_the_vllm_backend() -> None:
    from langchain_seed.cli import build_parser
    from langchain_seed.cli.tot import build_llm

    args = build_parser().parse_args(["tot", "--backend", "vllm", "--input", "4 5 6 10"])
    assert args.backend == "vllm"
    with pytest.raises(ImportError, match="pip install vllm"):
        build_llm(args)
    sc_args = build_parser().parse_args(["sc", "--backend", "vllm", "--question", "1 + 1?"])
    assert sc_args.backend == "vllm"


def test_vllm_logprobs_map_to_token_logprobs() -> None:
    """VLLM's per-token ``{token_id: Logprob}`` dicts (sampled token + ranked top-k) -> ours."""
    from types import SimpleNamespace as Logprob

    from langchain_seed.backends.vllm_requests import token_logprobs
    from langchain_seed.engine import TokenLogprob

    entries = [
        {7: Logprob(logprob=-0.1, rank=1), 9: Logprob(logprob=-2.5, rank=2)},
        {4: Logprob(logprob=-3.0, rank=5), 2: Logprob(logprob=-0.2, rank=1),
         5: Logprob(logprob=-1.9, rank=2)},
    ]  # fmt: skip
    assert token_logprobs([7, 4], entries, 2) == [
        TokenLogprob(7, -0.1, ((7, -0.1), (9, -2.5))),
        TokenLogprob(4, -3.0, ((2, -0.2), (5, -1.9))),
    ]
    assert token_logprobs([7], entries[:1], 0) == [TokenLogprob(7, -0.1, ())]
    assert sampling_kwargs(SamplingParams(logprobs=3))["logprobs"] == 3
