"""Regression tests for the defects a code review reproduced (request-reliability issue).

Each test failed on the code before its fix; the docstring says what it guards.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from langchain_core.messages import HumanMessage

import langchain_seed.engine.engine as engine_module
import langchain_seed.engine.execution.models as models_module
from langchain_seed import ChatSeed
from langchain_seed.engine import (
    Engine,
    EngineClosedError,
    EngineConfig,
    QueueFullError,
    SamplingParams,
)
from langchain_seed.engine.config import SamplingParams as Params
from langchain_seed.engine.execution.runner import ModelRunner
from langchain_seed.engine.scheduler import queue_part
from langchain_seed.engine.sequence import SequenceState
from langchain_seed.engine.speculation.drafters.model import ModelDrafter
from langchain_seed.engine.speculation.sampling import (
    position_noise,
    process_logits,
    sample_coupled,
)

WORDS = "the cat sat on a mat and then it ran off to see the dog who sat on the log".split()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def greedy_ref(pair, prompt: str, max_new: int) -> list[int]:
    """transformers' own greedy generate on the tiny target (EOS ignored)."""
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pair.target.generate(
            ids, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False, pad_token_id=2
        )
    return out[0, ids.shape[1] :].tolist()


# ----- 1. Engine.shared under a race -------------------------------------------------------
def test_shared_engine_is_one_engine_however_many_threads_race(model_path, monkeypatch):
    """Four threads asking at once for one configuration get one engine, not one each."""
    load = models_module.shared_model

    def slow_load(*args, **kwargs):
        time.sleep(0.2)  # widen the window between "not built yet" and "built"
        return load(*args, **kwargs)

    monkeypatch.setattr(models_module, "shared_model", slow_load)
    config = EngineConfig(model=model_path, max_batch_size=3, gamma=2)
    barrier = threading.Barrier(4)
    got: list[Engine] = []

    def ask() -> None:
        barrier.wait()
        got.append(Engine.shared(config))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    distinct = {id(e): e for e in got}
    for engine in distinct.values():
        engine.close()
    assert len(got) == 4 and len(distinct) == 1, f"{len(distinct)} engines for one config"


# ----- 2. a batch larger than max_queue ------------------------------------------------------
def test_batch_larger_than_queue_is_queued_in_parts_when_blocking(model_path):
    """``queue_full="block"``: a batch of 5 with max_queue=2 completes (it used to hang)."""
    config = EngineConfig(model=model_path, max_batch_size=2, max_queue=2, queue_full="block")
    prompts = [" ".join(WORDS[i : i + 3]) for i in range(5)]
    with Engine(config) as engine:
        done: list[list] = []
        worker = threading.Thread(
            target=lambda: done.append(engine.generate(prompts, SamplingParams(max_tokens=4))),
            daemon=True,
        )
        worker.start()
        worker.join(60)
        assert done, "submit_many of a batch larger than max_queue never returned"
        assert [len(r.token_ids) for r in done[0]] == [4] * 5


def test_batch_larger_than_queue_fails_at_once_with_a_clear_error(model_path):
    """``queue_full="error"``: the error says the batch exceeds max_queue (no 'retry later')."""
    config = EngineConfig(model=model_path, max_queue=2, queue_full="error")
    with Engine(config) as engine:
        with pytest.raises(QueueFullError, match=r"batch of 5 requests exceeds max_queue=2"):
            engine.submit_many(["a b c"] * 5, SamplingParams(max_tokens=2))
        # nothing of the rejected batch was queued; a batch that fits still runs
        assert len(engine.generate(["a b c"] * 2, SamplingParams(max_tokens=2))) == 2


def test_parts_of_a_blocked_batch_keep_a_group_together():
    """A part ends before a group that would straddle it, if the group fits in the queue."""
    seqs = [
        SequenceState(prompt_ids=[5, 6], params=Params(), group=g)
        for g in (None, None, "g", "g", "h", "h", "h", "h")
    ]
    parts, start = [], 0
    while start < len(seqs):
        n = queue_part(seqs, start, limit=3)
        parts.append([s.group for s in seqs[start : start + n]])
        start += n
    assert parts == [[None, None], ["g", "g"], ["h", "h", "h"], ["h"]]


def test_closing_while_a_batch_waits_for_room_fails_its_unqueued_requests(model_path):
    config = EngineConfig(model=model_path, max_batch_size=1, max_queue=1, queue_full="block")
    engine = Engine(config)
    futures: list = []
    worker = threading.Thread(
        target=lambda: futures.extend(
            engine.submit_many(
                ["stream forever"] * 4, SamplingParams(max_tokens=1000, ignore_eos=True)
            )
        ),
        daemon=True,
    )
    worker.start()
    time.sleep(0.2)
    engine.close()
    worker.join(10)
    assert len(futures) == 4
    # the first runs, the second waits in the queue, the others were never queued
    for future in futures[1:]:
        with pytest.raises(EngineClosedError):
            future.result(timeout=10)


# ----- 3. seeded sampling repeats ------------------------------------------------------------
SEEDED_PROMPT = "the cat sat on the mat and the cat sat on the"


def coupled_reference(pair, prompt: str, params: SamplingParams) -> list[int]:
    """Plain token-by-token sampling with the seed's per-position noise (no engine)."""
    ids = pair.tokenizer(prompt).input_ids
    out: list[int] = []
    with torch.no_grad():
        for t in range(params.max_tokens):
            logits = pair.target(torch.tensor([ids + out])).logits[0, -1]
            p = process_logits(logits[None], params)
            noise = position_noise(params.seed, [t], p.shape[-1])
            out.append(int(sample_coupled(p, noise)[0]))
    return out


SEEDED_CONFIGS = {
    "autoregressive": dict(policy="autoregressive", drafters=()),
    "batched_ngram": dict(policy="batched", drafters=("ngram",)),
    "batched_consensus_ngram": dict(policy="batched", drafters=("consensus", "ngram"), gamma=6),
    "batched_model_ngram": dict(policy="batched", drafters=("model", "ngram")),
    "fcfs_model": dict(policy="fcfs_rounds", drafters=("model",), gamma=3),
}


@pytest.mark.parametrize("name", list(SEEDED_CONFIGS))
def test_seeded_request_gives_the_same_tokens_alone_twice_and_next_to_neighbours(tiny_pair, name):
    """The same seed gives the same tokens in every engine configuration and batch.

    The reference is plain sampling with the seed, so drafts, neighbours, policy and the
    timing-fitted draft lengths cannot change a seeded request's output.
    """
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=24, seed=7, ignore_eos=True)
    expected = coupled_reference(tiny_pair, SEEDED_PROMPT, params)
    kwargs = SEEDED_CONFIGS[name]
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path) if "model" in kwargs["drafters"] else None,
        max_batch_size=8,
        **kwargs,
    )
    neighbours = [" ".join(WORDS[i : i + 4 + i % 5] * (1 + i % 3)) for i in range(7)]
    neighbour_params = [
        SamplingParams(temperature=0.9 if i % 2 else 0.0, max_tokens=8 + 5 * i, seed=None)
        for i in range(7)
    ]
    with Engine(config) as engine:
        alone = [engine.generate([SEEDED_PROMPT], params)[0].token_ids for _ in range(2)]
        crowd = engine.generate(
            [*neighbours[:3], SEEDED_PROMPT, *neighbours[3:]],
            [*neighbour_params[:3], params, *neighbour_params[3:]],
            group=[None, None, None, "g", "g", None, None, None],  # a sibling for consensus
        )[3].token_ids
    assert alone[0] == expected
    assert alone[1] == expected
    assert crowd == expected


# ----- 4. a failed step --------------------------------------------------------------------
def test_failed_step_resolves_every_request_and_releases_drafter_state(tiny_pair, monkeypatch):
    """A step that raises fails every running request with the cause, counts them as
    failed, leaves no consensus group or prefix reference held, and the engine goes on."""
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        drafters=("consensus", "ngram"),
        max_batch_size=8,
    )
    with Engine(config) as engine:
        calls = {"n": 0}
        forward = engine.runner.forward

        def failing_forward(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 4:  # a decode step with every request running
                raise RuntimeError("boom: device fault")
            return forward(*args, **kwargs)

        monkeypatch.setattr(engine.runner, "forward", failing_forward)
        # Distinct max_tokens: identical greedy members would decode once (coalescing).
        futures = engine.submit_many(
            ["the cat sat"] * 3 + ["a dog ran off to see"],
            [SamplingParams(max_tokens=30 + i, ignore_eos=True) for i in range(4)],
            group=["g", "g", "g", None],
        )
        for future in futures:
            with pytest.raises(RuntimeError, match="boom"):
                future.result(timeout=30)
        monkeypatch.setattr(engine.runner, "forward", forward)
        stats = engine.stats()
        assert stats.requests_failed == 4
        consensus = next(d for d in engine.drafters if d.name == "consensus")
        assert list(consensus._groups) == []
        assert all(node.refs == 0 for node in engine.prefix_cache._nodes())
        # the engine still serves requests, losslessly
        result = engine.generate(["the cat sat"], SamplingParams(max_tokens=12, ignore_eos=True))
        assert result[0].token_ids == greedy_ref(tiny_pair, "the cat sat", 12)


# ----- 5. groups at admission -----------------------------------------------------------
def test_group_is_admitted_whole_or_waits(tiny_pair, monkeypatch):
    """A group of 4 next to one running request with max_batch_size=4 is not split."""
    config = EngineConfig(
        model=str(tiny_pair.target_path), max_batch_size=4, prefix_cache_tokens=0, drafters=()
    )
    with Engine(config) as engine:
        admitted: list[list[str | None]] = []
        schedule = engine.scheduler.schedule_admission

        def spy():
            seqs = schedule()
            if seqs:
                admitted.append([s.group for s in seqs])
            return seqs

        monkeypatch.setattr(engine.scheduler, "schedule_admission", spy)
        params = SamplingParams(max_tokens=20, ignore_eos=True)
        solo = engine.submit("a dog ran off", params)
        while not engine.scheduler.running:
            time.sleep(0.005)
        # Distinct max_tokens: identical greedy members would decode once (coalescing).
        members = [SamplingParams(max_tokens=20 + i, ignore_eos=True) for i in range(4)]
        group = engine.submit_many(["the cat sat on"] * 4, members, group="g")
        results = [f.result(timeout=60) for f in group]
        solo.result(timeout=60)
    assert [None] in admitted and ["g"] * 4 in admitted, admitted
    key = len(tiny_pair.tokenizer("the cat sat on").input_ids) - 1
    assert sorted(r.stats.cached_prompt_tokens for r in results) == [0, key, key, key]
    expected = greedy_ref(tiny_pair, "the cat sat on", 23)
    assert all(r.token_ids == expected[: len(r.token_ids)] for r in results)


@pytest.mark.parametrize("prefix_cache", [0, 4096])
def test_late_members_of_a_group_larger_than_the_batch_fork_the_prompt(tiny_pair, prefix_cache):
    """Members admitted after the first batch fork the prompt's KV (a running sibling's
    row, or the prefix cache) instead of prefilling it again."""
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        max_batch_size=4,
        prefix_cache_tokens=prefix_cache,
        drafters=(),
    )
    prompt = "the cat sat on a mat and then"
    params = [SamplingParams(max_tokens=6 + 4 * i, ignore_eos=True) for i in range(6)]
    with Engine(config) as engine:
        results = engine.generate([prompt] * 6, params, group="g")
    key = len(tiny_pair.tokenizer(prompt).input_ids) - 1
    assert sorted(r.stats.cached_prompt_tokens for r in results) == [0] + [key] * 5
    longest = greedy_ref(tiny_pair, prompt, 26)
    assert all(r.token_ids == longest[: len(r.token_ids)] for r in results)


# ----- 6. model-drafter rollback -------------------------------------------------------------
def test_model_drafter_verified_hook_never_keeps_the_pending_token(tiny_pair):
    """When another drafter won and the emitted token equals the model's first draft
    token, the draft cache must still stop before the pending token, and the next
    proposal must draft."""
    runner = ModelRunner(tiny_pair.draft, max_rows=2, device="cpu", budget_tokens=512)
    drafter = ModelDrafter(runner)
    seq = SequenceState(prompt_ids=tiny_pair.tokenizer("the cat sat").input_ids, params=Params())
    seq.row = 0
    drafter.runner.cache.layout(256, live_rows=0)
    with torch.inference_mode():
        drafter.runner.prefill(0, [seq.prompt_ids[:-1]])
        [draft] = drafter.propose([seq], [3])
        assert len(draft.tokens) == 3
        # Verification emitted one token (another drafter's draft was rejected at once)
        # that happens to equal the model's first draft token.
        new_tokens = [draft.tokens[0]]
        seq.output_ids.extend(new_tokens)
        drafter.verified(seq, new_tokens)
        assert drafter.runner.lengths[0] <= seq.num_tokens - 1
        [again] = drafter.propose([seq], [3])
    assert len(again.tokens) == 3


def test_model_drafts_every_step_in_a_busy_batch(tiny_pair, monkeypatch):
    """Engine-level: after every verified hook the draft cache holds at most N - 1 tokens."""
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path),
        drafters=("model", "ngram"),
        max_batch_size=8,
        adaptive_gamma=False,
    )
    with Engine(config) as engine:
        md = engine.model_drafter
        assert md is not None
        rollback = md.verified
        violations: list[tuple[int, int]] = []

        def checked(seq, new_tokens):
            rollback(seq, new_tokens)
            held = md.runner.lengths[seq.row]
            if held > seq.num_tokens + len(new_tokens) - 1:
                violations.append((held, seq.num_tokens + len(new_tokens)))

        monkeypatch.setattr(md, "verified", checked)
        prompts = [" ".join(WORDS[i : i + 3 + i % 4] * 3) for i in range(12)]
        engine.generate(prompts, SamplingParams(max_tokens=24, ignore_eos=True))
    assert violations == []


# ----- 7. closing a shared engine ------------------------------------------------------------
def test_closed_shared_engine_leaves_the_registry_and_frees_its_memory(model_path):
    config = EngineConfig(model=model_path, max_batch_size=5, prefix_cache_tokens=2048)
    engine = Engine.shared(config)
    engine.generate(["the cat sat on the mat"], SamplingParams(max_tokens=4))
    assert engine.prefix_cache.stats()["memory_bytes"] > 0
    engine.close()
    assert engine not in engine_module.EMBEDDED_ENGINES.engines()
    assert engine.prefix_cache.stats()["memory_bytes"] == 0
    assert engine.prefix_cache.tokens_stored == 0
    assert engine.runner.cache.nbytes() == 0
    fresh = Engine.shared(config)
    try:
        assert fresh is not engine and not fresh.closed
    finally:
        fresh.close()


# ----- 8. chat templates and the tokenizer lock ------------------------------------------
def test_chat_template_is_rendered_under_the_engine_tokenizer_lock(model_path, monkeypatch):
    """The engine thread decodes with the same fast tokenizer: rendering must hold its lock."""
    with Engine(EngineConfig(model=model_path)) as engine:
        tokenizer = engine.tokenizer
        render = tokenizer.apply_chat_template
        held: list[bool] = []

        def spy(*args, **kwargs):
            held.append(engine._tok_lock.locked())
            return render(*args, **kwargs)

        monkeypatch.setattr(tokenizer, "apply_chat_template", spy)
        chat = ChatSeed(engine=engine, max_tokens=3)
        chat.invoke([HumanMessage("hello")])
        chat.batch([[HumanMessage("hi")], [HumanMessage("there")]])
    assert held and all(held), held


def test_close_shared_closes_every_shared_engine(model_path):
    first = Engine.shared(EngineConfig(model=model_path, max_batch_size=6))
    second = Engine.shared(EngineConfig(model=model_path, max_batch_size=7))
    assert Engine.close_shared() >= 2
    assert first.closed and second.closed
    assert engine_module.EMBEDDED_ENGINES.engines() == []
