"""Tree-of-Thoughts on the real engine with tiny random models: batching and losslessness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.language_models.llms import LLM

from langchain_seed.tree_of_thoughts import ToTTask, TreeOfThoughts

MAX_TOKENS = 12


@dataclass
class ByteTask(ToTTask):
    """A task whose tree is a pure function of the model's bytes.

    Propose: the one output is cut into three 4-character thoughts. Value: a checksum of
    the evaluation outputs. Two runs give equal trees only if every output is equal.
    """

    name: str = "bytes"
    steps: int = 2
    generate_mode: Any = "propose"
    evaluate_mode: Any = "value"
    breadth: int = 2
    n_evaluate_sample: int = 2
    temperature: float = 0.0

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        return f"{x} | {state}"

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        text = outputs[0]
        return [state + text[i : i + 4] + ";" for i in range(0, 12, 4) if text[i : i + 4]]

    def value_prompt(self, x: str, state: str, step: int) -> str:
        return f"value of {state} ="

    def parse_value(self, x: str, state: str, outputs: list[str]) -> float | None:
        return float(sum(sum(map(ord, o)) % 97 for o in outputs))


class SequentialHF(LLM):
    """Plain transformers greedy ``generate``, one prompt at a time (the reference)."""

    model: Any
    tokenizer: Any

    @property
    def _llm_type(self) -> str:
        return "sequential-hf"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kw: Any) -> str:
        import torch

        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = self.model.generate(
                ids, max_new_tokens=MAX_TOKENS, do_sample=False, attention_mask=torch.ones_like(ids)
            )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def seed_llms(tiny_pair):  # type: ignore[no-untyped-def]
    from langchain_seed import SeedLLM

    path = str(tiny_pair.target_path)
    return {
        "autoregressive": SeedLLM(model=path, policy="autoregressive", drafters=()),
        "batched": SeedLLM(model=path, policy="batched", drafters=("ngram", "consensus")),
    }


def _run(llm: Any, pipeline: bool = True) -> dict:
    tot = TreeOfThoughts(
        llm=llm, task=ByteTask(), max_tokens=MAX_TOKENS, temperature=0.0, pipeline=pipeline
    )
    return tot.invoke({"input": "tiny tree"})


def test_seedllm_gets_one_generate_per_phase_unpipelined(seed_llms, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from langchain_seed import SeedLLM

    calls: list[tuple[int, int, int]] = []
    original = SeedLLM.generate

    def counting(self, prompts, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((len(prompts), kwargs["n"], kwargs["max_tokens"]))
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(SeedLLM, "generate", counting)
    result = _run(seed_llms["batched"], pipeline=False)
    phases = result["stats"]["phases"]
    assert len(calls) == len(phases) == result["stats"]["model_submissions"]
    assert [(c[0], c[1]) for c in calls] == [(p["prompts"], p["n"]) for p in phases]
    assert calls[0] == (1, 1, MAX_TOKENS)  # the root's propose call
    assert calls[1][1] == 2  # evaluations: n_evaluate_sample samples as one group
    assert calls[2][0] == 2  # level 1: both beams' proposals in one call
    stats = result["stats"]
    assert stats["prompt_tokens"] > 0 and stats["generated_tokens"] > 0
    assert stats["engine_stats"]["target_forwards"] > 0
    assert len(result["tree"]) > 4


def test_tree_is_lossless_across_policies_and_a_sequential_hf_loop(seed_llms, tiny_pair) -> None:  # type: ignore[no-untyped-def]
    trees = {name: _run(llm)["tree"] for name, llm in seed_llms.items()}
    reference = _run(SequentialHF(model=tiny_pair.target, tokenizer=tiny_pair.tokenizer))["tree"]
    assert len(reference) > 4 and any(n["value"] for n in reference)
    assert trees["batched"] == trees["autoregressive"]
    assert trees["batched"] == reference


async def test_async_tree_equals_sync_on_the_engine(seed_llms) -> None:  # type: ignore[no-untyped-def]
    tot = TreeOfThoughts(llm=seed_llms["batched"], task=ByteTask(), max_tokens=MAX_TOKENS)
    assert (await tot.ainvoke({"input": "tiny tree"}))["tree"] == _run(seed_llms["batched"])["tree"]


def test_chatseed_is_driven_through_generate_with_n(seed_llms, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from langchain_seed import ChatSeed

    chat = ChatSeed(llm=seed_llms["batched"])
    calls: list[tuple[int, int]] = []
    original = ChatSeed.generate

    def counting(self, messages, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((len(messages), kwargs["n"]))
        return original(self, messages, *args, **kwargs)

    monkeypatch.setattr(ChatSeed, "generate", counting)
    tot = TreeOfThoughts(llm=chat, task=ByteTask(), max_tokens=MAX_TOKENS, pipeline=False)
    result = tot.invoke({"input": "t"})
    assert calls == [(p["prompts"], p["n"]) for p in result["stats"]["phases"]]
    assert len(result["tree"]) > 1 and result["stats"]["generated_tokens"] > 0


def test_concurrent_searches_share_the_engine_and_keep_their_trees(seed_llms) -> None:  # type: ignore[no-untyped-def]
    tot = TreeOfThoughts(llm=seed_llms["batched"], task=ByteTask(), max_tokens=MAX_TOKENS)
    inputs = [{"input": "first tree"}, {"input": "second tree"}]
    together = tot.batch(inputs)  # two searches on two threads, one engine batch
    alone = [tot.invoke(i) for i in inputs]
    assert [r["tree"] for r in together] == [r["tree"] for r in alone]
    assert together[0]["tree"] != together[1]["tree"]


@pytest.mark.parametrize(
    ("llm_kwargs", "tot_temperature", "expected"),
    [
        ({}, None, 0.5),  # nothing explicit: the task's temperature
        ({"temperature": 0.0}, None, None),  # the model's explicit setting is kept
        ({"temperature": 0.0}, 0.9, 0.9),  # the search's own setting wins
    ],
)
def test_temperature_comes_from_the_search_then_the_model_then_the_task(
    tiny_pair, llm_kwargs, tot_temperature, expected
) -> None:  # type: ignore[no-untyped-def]
    from langchain_seed import SeedLLM

    llm = SeedLLM(model=str(tiny_pair.target_path), **llm_kwargs)
    tot = TreeOfThoughts(llm=llm, task=ByteTask(temperature=0.5), temperature=tot_temperature)
    assert tot._temperature() == expected


def _counters(result: dict) -> dict:
    keys = ("calls", "completions", "nodes", "evaluation_prompts", "value_cache_hits")
    return {k: result["stats"][k] for k in keys}


@pytest.mark.parametrize("name", ["autoregressive", "batched"])
def test_pipelined_search_builds_the_same_tree_with_the_same_counts(seed_llms, name) -> None:  # type: ignore[no-untyped-def]
    llm = seed_llms[name]
    task = ByteTask(steps=3, breadth=3)
    plain = TreeOfThoughts(llm=llm, task=task, max_tokens=MAX_TOKENS, pipeline=False).invoke(
        {"input": "tiny tree"}
    )
    piped = TreeOfThoughts(llm=llm, task=task, max_tokens=MAX_TOKENS, pipeline=True).invoke(
        {"input": "tiny tree"}
    )
    assert piped["tree"] == plain["tree"] and len(plain["tree"]) > 8
    assert _counters(piped) == _counters(plain)
    overlapped = [p for p in piped["stats"]["phases"] if p.get("overlapped")]
    assert overlapped and all(p["phase"] == "evaluate" for p in overlapped)


async def test_pipelined_async_search_equals_the_plain_one(seed_llms) -> None:  # type: ignore[no-untyped-def]
    task = ByteTask(steps=3, breadth=3)
    llm = seed_llms["batched"]
    plain = _run(llm, pipeline=False)
    tot = TreeOfThoughts(llm=llm, task=ByteTask(), max_tokens=MAX_TOKENS, pipeline=True)
    assert (await tot.ainvoke({"input": "tiny tree"}))["tree"] == plain["tree"]
    wide = TreeOfThoughts(llm=llm, task=task, max_tokens=MAX_TOKENS, pipeline=True)
    ref = TreeOfThoughts(llm=llm, task=task, max_tokens=MAX_TOKENS, pipeline=False)
    assert (await wide.ainvoke({"input": "x"}))["tree"] == ref.invoke({"input": "x"})["tree"]


def test_pipelining_works_with_any_langchain_model() -> None:
    from tot_fakes import ScriptedLLM

    def respond(prompt: str) -> str:
        return "abcdefghijkl" if "|" in prompt else str(len(prompt))

    task = ByteTask(steps=2, breadth=2)
    plain = TreeOfThoughts(llm=ScriptedLLM(respond=respond), task=task, pipeline=False).invoke("q")
    piped = TreeOfThoughts(llm=ScriptedLLM(respond=respond), task=task, pipeline=True)
    result = piped.invoke("q")
    assert result["tree"] == plain["tree"] and _counters(result) == _counters(plain)


def test_pipelining_respects_max_concurrency(seed_llms) -> None:  # type: ignore[no-untyped-def]
    task = ByteTask(steps=3, breadth=3)
    llm = seed_llms["batched"]
    plain = TreeOfThoughts(llm=llm, task=task, max_tokens=MAX_TOKENS, pipeline=False)
    piped = TreeOfThoughts(llm=llm, task=task, max_tokens=MAX_TOKENS)
    one_at_a_time = piped.invoke({"input": "x"}, {"max_concurrency": 1})
    assert one_at_a_time["tree"] == plain.invoke({"input": "x"})["tree"]
