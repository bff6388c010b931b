"""Consensus drafting inside the engine (tiny models) and SelfConsistency over SeedLLM."""

from __future__ import annotations

import time

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams

PROMPTS = ["the cat sat on the mat", "a dog ran", "on the log the dog sat and sat"]
MEMBERS = 4
MAX_NEW = 24


class Leader:
    """A group's first request, counting the text pieces it has streamed."""

    def __init__(self) -> None:
        self.pieces = 0
        self.future = None

    def __call__(self, delta: str) -> None:
        self.pieces += 1


def wait_until_ahead(leaders: list[Leader], pieces: int, timeout: float = 60.0) -> None:
    """Block until every leader streamed ``pieces`` pieces or finished (siblings draft from it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lead.pieces >= pieces or lead.future.done() for lead in leaders):
            return
        time.sleep(0.01)


def transformers_greedy(pair, prompt: str, max_new: int) -> list[int]:
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        gen = pair.target.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=2)
    return gen[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def references(tiny_pair) -> list[list[int]]:
    return [transformers_greedy(tiny_pair, p, MAX_NEW) for p in PROMPTS]


@pytest.mark.parametrize("policy", ["batched", "fcfs_rounds"])
def test_grouped_greedy_with_consensus_equals_transformers_greedy(tiny_pair, references, policy):
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        policy=policy,
        drafters=("consensus", "ngram"),
        max_batch_size=8,
        adaptive_gamma=False,
    )
    params = SamplingParams(max_tokens=MAX_NEW, ignore_eos=True)
    with Engine(config) as engine:
        futures = []
        # One leader per group first, its siblings a moment later: the late members draft
        # from what the leader already generated (the consensus drafter's real job).
        leaders = [Leader() for _ in PROMPTS]
        for i, prompt in enumerate(PROMPTS):
            leaders[i].future = engine.submit(prompt, params, group=f"g{i}", on_delta=leaders[i])
            futures.append([leaders[i].future])
        wait_until_ahead(leaders, pieces=8)
        for i, prompt in enumerate(PROMPTS):
            # One submission per member: identical greedy members of one submission would
            # decode once (coalescing), and this test needs every sibling decoding.
            for _ in range(MEMBERS - 1):
                futures[i] += engine.submit_many([prompt], params, group=f"g{i}")
        results = [[f.result(timeout=120) for f in group] for group in futures]
        stats = engine.stats()
    for group, ref in zip(results, references, strict=True):
        for result in group:
            assert result.token_ids == ref
    accepted = stats.spec.accepted_by_drafter.get("consensus", 0)
    assert accepted > 0, f"consensus drafts were never accepted: {stats.spec.to_dict()}"


def test_grouped_sampling_with_consensus_keeps_target_distribution(tiny_small_vocab_pair):
    """The point-mass rule with consensus drafts leaves the sampled marginals exact."""
    from test_engine_sampling import (
        PROMPT,
        SAMPLING_CASES,
        TOLERANCE,
        empirical_marginals,
        exact_marginals,
        tv,
    )

    samples, group_size = 1500, 150
    base = SAMPLING_CASES["plain"]
    plist = [
        SamplingParams(temperature=base.temperature, max_tokens=3, seed=5000 + i, ignore_eos=True)
        for i in range(samples)
    ]
    config = EngineConfig(
        model=str(tiny_small_vocab_pair.target_path),
        policy="batched",
        drafters=("consensus",),
        max_batch_size=64,  # < group size: later members draft from finished siblings
        gamma=3,
        adaptive_gamma=False,
        prefix_cache_tokens=0,
    )
    with Engine(config) as engine:
        futures = []
        for g in range(samples // group_size):
            chunk = plist[g * group_size : (g + 1) * group_size]
            futures += engine.submit_many([PROMPT] * group_size, chunk, group=f"s{g}")
        results = [f.result(timeout=300) for f in futures]
        stats = engine.stats()
    assert stats.spec.drafted_by_drafter.get("consensus", 0) > 0, "consensus never drafted"
    exact = exact_marginals(tiny_small_vocab_pair.target, base)
    got = empirical_marginals(results, exact.shape[1])
    assert (tv(got, exact) < TOLERANCE).all(), tv(got, exact).tolist()


# ---------------------------------------------------------------------- SelfConsistency


@pytest.fixture(scope="module")
def tiny_engine(tiny_pair):
    config = EngineConfig(
        model=str(tiny_pair.target_path), drafters=("consensus", "ngram"), max_batch_size=16
    )
    engine = Engine(config)
    yield engine
    engine.close()


def spy_submissions(monkeypatch, engine: Engine) -> list[tuple[int, str | None]]:
    calls: list[tuple[int, str | None]] = []
    original = Engine.submit_many

    def submit_many(self, prompts, params=None, *, group=None, **kwargs):
        if self is engine:
            calls.append((len(prompts), group))
        return original(self, prompts, params, group=group, **kwargs)

    monkeypatch.setattr(Engine, "submit_many", submit_many)
    return calls


def spy_generate(monkeypatch, cls) -> list[dict]:
    calls: list[dict] = []
    original = cls.generate

    def generate(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "generate", generate)
    return calls


def test_self_consistency_over_seed_llm_makes_one_grouped_generate_call(tiny_engine, monkeypatch):
    from langchain_seed.llms import SeedLLM
    from langchain_seed.self_consistency import SelfConsistency

    llm = SeedLLM(engine=tiny_engine)
    generates = spy_generate(monkeypatch, SeedLLM)
    submissions = spy_submissions(monkeypatch, tiny_engine)
    sc = SelfConsistency(
        llm=llm, prompt="{q}", n=6, temperature=0.9, max_tokens=8, parser=lambda t: t[:1], seed=1
    )
    out = sc.invoke({"q": "the cat sat"})
    assert len(generates) == 1
    assert generates[0]["n"] == 6 and generates[0]["temperature"] == 0.9
    assert generates[0]["max_tokens"] == 8
    assert len(submissions) == 1 and submissions[0][0] == 6 and submissions[0][1] is not None
    stats = out["stats"]
    assert stats["engine_backed"] is True and stats["samples"] == 6
    assert 6 <= stats["generated_tokens"] <= 48
    assert "engine" in stats and stats["engine"]
    assert sum(out["votes"].values()) + stats["unparsed"] == 6


def test_self_consistency_batch_over_seed_llm_is_one_generate_call(tiny_engine, monkeypatch):
    from langchain_seed.llms import SeedLLM
    from langchain_seed.self_consistency import SelfConsistency

    llm = SeedLLM(engine=tiny_engine)
    generates = spy_generate(monkeypatch, SeedLLM)
    submissions = spy_submissions(monkeypatch, tiny_engine)
    sc = SelfConsistency(llm=llm, prompt="{q}", n=4, max_tokens=6, parser=lambda t: t[:1])
    outs = sc.batch(["one", "two", "three"])
    assert len(generates) == 1
    assert [n for n, _ in submissions] == [4, 4, 4]
    assert len({g for _, g in submissions}) == 3  # one engine group per question
    assert [o["stats"]["samples"] for o in outs] == [4, 4, 4]


def test_self_consistency_over_chat_seed_uses_the_chat_path(tiny_engine, monkeypatch):
    from langchain_seed.chat_models import ChatSeed
    from langchain_seed.self_consistency import SelfConsistency

    chat = ChatSeed(engine=tiny_engine)
    generates = spy_generate(monkeypatch, ChatSeed)
    sc = SelfConsistency(llm=chat, prompt="{q}", n=3, max_tokens=5, parser=lambda t: t[:1])
    out = sc.invoke("hi")
    assert len(generates) == 1 and generates[0]["n"] == 3
    assert out["stats"]["samples"] == 3 and out["stats"]["engine_backed"] is True


async def test_async_self_consistency_over_seed_llm(tiny_engine):
    from langchain_seed.llms import SeedLLM
    from langchain_seed.self_consistency import SelfConsistency

    sc = SelfConsistency(
        llm=SeedLLM(engine=tiny_engine),
        prompt="{q}",
        n=4,
        max_tokens=5,
        early_stop=True,
        round_size=1,
        parser=lambda t: "same",
    )
    out = await sc.ainvoke("hello")
    # Every sample votes "same": after the first round of 1, 1 > 0 + 3 fails; after 3
    # samples 3 > 0 + 1 holds, so the run stops one sample early.
    assert out["answer"] == "same"
    assert out["stats"]["samples"] == 3 and out["stats"]["early_stopped"] is True
