"""Issue 9 reliability on the tiny model: bad input, faults, cancellation and load.

Complements ``test_engine_api.py`` (SamplingParams / EngineConfig validation, future and
asyncio-task cancellation, request_timeout, NaN logits, a step crash, close, the bounded
queue in "error" mode, many threads). Here: the same guarantees through the LangChain
classes, faults inside one request's text processing, a crash of the engine thread itself,
``queue_full="block"``, process exit with a busy engine, and a 100-request soak
(``benchmarks/soak.py``) from several threads and an event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
import torch
from langchain_core.messages import HumanMessage
from lc_adapter_helpers import SpyEngine

from langchain_seed import ChatSeed, SeedLLM, SelfConsistency
from langchain_seed.engine import (
    Engine,
    EngineClosedError,
    EngineConfig,
    SamplingParams,
)

ROOT = Path(__file__).resolve().parents[2]
LONG_PROMPT = "stream forever"  # the tiny target's greedy continuation has no EOS in 600 tokens
LONG_CHAT_PROMPT = "more"  # likewise once rendered by the chat template
LONG = 600


def slow(_piece: str) -> None:
    """A streaming callback that makes every step of its request last >= 10 ms.

    Tests that need a request to still be running after a fixed wait use it: the engine
    alone may finish 600 tiny-model tokens in well under a second.
    """
    time.sleep(0.01)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def model_path(tiny_pair) -> str:
    return str(tiny_pair.target_path)


@pytest.fixture
def engine(model_path):
    """A private engine: its counters and slots belong to one test."""
    with Engine(EngineConfig(model=model_path, max_batch_size=4)) as eng:
        yield eng


def greedy_ref(pair, prompt: str, max_new: int) -> list[int]:
    """transformers' own greedy generate on the tiny target."""
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pair.target.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=2)
    return out[0, ids.shape[1] :].tolist()


def wait_idle(engine: Engine, timeout: float = 10.0) -> bool:
    """True once nothing runs or waits (a cancelled request is reaped at the next step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not engine.scheduler.running and not engine.scheduler.waiting:
            return True
        time.sleep(0.01)
    return False


def wait_running(engine: Engine, count: int = 1, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(engine.scheduler.running) < count:
        assert time.monotonic() < deadline, "request was never admitted"
        time.sleep(0.005)


def held_prefix_spans(engine: Engine) -> int:
    """Prefix-cache spans still referenced by some request (0 once all are released)."""
    return sum(1 for node in engine.prefix_cache._nodes() if node.refs != 0)


# ----- validation at the LangChain call ---------------------------------------------
BAD_CALL_VALUES = [
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 0}, "n must be"),
    ({"timeout": 0}, "request_timeout"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_CALL_VALUES)
def test_seedllm_bad_call_value_raises_naming_it_and_submits_nothing(engine, kwargs, field):
    spy = SpyEngine(engine)
    llm = SeedLLM(engine=spy, max_tokens=4)
    with pytest.raises(ValueError, match=field):
        llm.invoke("hello", **kwargs)
    assert spy.submissions == []


@pytest.mark.parametrize(("kwargs", "field"), BAD_CALL_VALUES)
async def test_chatseed_bad_call_value_raises_naming_it_and_submits_nothing(engine, kwargs, field):
    spy = SpyEngine(engine)
    chat = ChatSeed(engine=spy, max_tokens=4)
    with pytest.raises(ValueError, match=field):
        await chat.ainvoke("hello", **kwargs)
    assert spy.submissions == []


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -3}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"timeout": -1}, "timeout"),
        ({"policy": "fastest"}, "policy"),
        ({"drafters": ("oracle",)}, "drafters"),
        ({"drafters": ("model",)}, "draft_model"),
    ],
)
def test_chatseed_invalid_field_raises_at_construction_naming_it(fields, name):
    with pytest.raises(ValueError, match=name):
        ChatSeed(**fields)


def test_overlong_prompt_through_seedllm_raises_at_the_call_naming_the_context(engine):
    llm = SeedLLM(engine=engine, max_tokens=8)
    with pytest.raises(ValueError, match=r"context is \d+ tokens"):
        llm.invoke("x" * (engine.max_context - 4))
    assert not engine.scheduler.waiting and not engine.scheduler.running


def test_image_content_raises_when_streaming_before_anything_is_submitted(engine):
    spy = SpyEngine(engine)
    chat = ChatSeed(engine=spy, max_tokens=4)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(ValueError, match="text content only"):
        list(chat.stream([HumanMessage(content=[image])]))
    assert spy.submissions == []


def test_self_consistency_parser_errors_leave_samples_unparsed_on_the_engine(engine):
    calls = []

    def fussy(text: str) -> str:
        calls.append(text)
        if len(calls) % 2:  # every other sample's parse fails, whatever the texts are
            raise ValueError("fussy parser")
        return str(len(text) % 3)

    llm = SeedLLM(engine=engine, max_tokens=8)
    sc = SelfConsistency(llm=llm, prompt="Q: {question}\nA:", n=8, parser=fussy, seed=7)
    out = sc.invoke({"question": "what?"})
    assert len(out["samples"]) == 8 and len(calls) == 8
    assert out["stats"]["unparsed"] == 4
    parsed = [str(len(text) % 3) for i, text in enumerate(calls) if i % 2]
    assert sum(out["votes"].values()) == len(parsed) == 4
    assert out["votes"] == {a: parsed.count(a) for a in set(parsed)}


def test_seedllm_batch_with_a_bad_prompt_returns_its_error_and_the_other_outputs(engine):
    llm = SeedLLM(engine=engine, max_tokens=4)
    out = llm.batch(["hello", "", "world"], return_exceptions=True)
    assert isinstance(out[1], ValueError)
    assert [out[0], out[2]] == [llm.invoke("hello"), llm.invoke("world")]


async def test_seedllm_abatch_with_a_bad_prompt_returns_its_error_and_the_other_outputs(engine):
    llm = SeedLLM(engine=engine, max_tokens=4)
    out = await llm.abatch(["hello", "x" * 2000, "world"], return_exceptions=True)
    assert isinstance(out[1], ValueError)
    assert [out[0], out[2]] == [await llm.ainvoke("hello"), await llm.ainvoke("world")]


# ----- validation gaps found by these tests (engine / SamplingParams) ----------------
@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_seed_outside_the_generator_range_is_rejected_at_the_call(seed):
    with pytest.raises(ValueError, match="seed"):
        SamplingParams(temperature=0.7, seed=seed)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"request_timeout": math.nan}, "request_timeout"),
    ],
)
def test_non_finite_sampling_values_are_rejected_at_the_call(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_prompt_token_outside_the_vocabulary_is_rejected_and_others_run(engine, tiny_pair):
    running = engine.submit(LONG_PROMPT, SamplingParams(max_tokens=40))
    wait_running(engine)
    try:
        with pytest.raises(ValueError, match="vocab"):
            engine.submit([5, 10**6], SamplingParams(max_tokens=4))
    finally:
        result = running.result(timeout=30)  # the batch it would have joined is unharmed
    assert result.token_ids == greedy_ref(tiny_pair, LONG_PROMPT, 40)


def test_one_token_prompts_admitted_together_all_complete(engine, tiny_pair):
    futures = engine.submit_many(["a", "b", "a"], SamplingParams(max_tokens=3))
    results = [future.result(timeout=5) for future in futures]
    assert [r.token_ids for r in results] == [greedy_ref(tiny_pair, p, 3) for p in "aba"]


def test_invalid_prompt_in_submit_many_queues_none_of_the_batch(engine):
    with pytest.raises(ValueError, match="empty"):
        engine.submit_many(["fine", ""], SamplingParams(max_tokens=3))
    time.sleep(0.05)
    assert wait_idle(engine)
    stats = engine.stats()
    assert stats.requests_finished == 0 and stats.spec.prompt_tokens == 0


# ----- faults inside one request -----------------------------------------------------
def test_stop_string_processing_error_fails_only_that_request(engine, tiny_pair, monkeypatch):
    original = engine.text.update

    def update(seq):
        if "<poison>" in seq.params.stop:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "injected decode failure")
        return original(seq)

    monkeypatch.setattr(engine.text, "update", update)
    bad = engine.submit("boom", SamplingParams(max_tokens=6, stop=("<poison>",)))
    good = engine.submit_many(["fine a", "fine b"], SamplingParams(max_tokens=6))
    with pytest.raises(UnicodeDecodeError, match="injected"):
        bad.result(timeout=30)
    assert [f.result(timeout=30).token_ids for f in good] == [
        greedy_ref(tiny_pair, p, 6) for p in ("fine a", "fine b")
    ]
    after = engine.generate(["after"], SamplingParams(max_tokens=6, stop=("zz",)))[0]
    assert after.token_ids == greedy_ref(tiny_pair, "after", 6)
    assert engine.stats().requests_failed == 1


def test_stream_callback_error_fails_only_that_request(engine, tiny_pair):
    def callback(piece: str) -> None:
        raise RuntimeError("consumer broke")

    bad = engine.submit("boom", SamplingParams(max_tokens=6), on_delta=callback)
    good = engine.submit("fine", SamplingParams(max_tokens=6))
    with pytest.raises(RuntimeError, match="consumer broke"):
        bad.result(timeout=30)
    assert good.result(timeout=30).token_ids == greedy_ref(tiny_pair, "fine", 6)
    assert wait_idle(engine) and held_prefix_spans(engine) == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_engine_thread_crash_fails_pending_requests_and_shared_restarts(model_path, tiny_pair):
    config = EngineConfig(model=model_path, max_batch_size=3, gamma=3)  # a key no test shares
    engine = Engine.shared(config)
    try:
        running = engine.submit(LONG_PROMPT, SamplingParams(max_tokens=LONG, ignore_eos=True))
        wait_running(engine)

        def crash(seq):
            raise RuntimeError("injected engine-thread crash")

        engine.service._attach_generator = crash  # runs on the engine thread for every new request
        doomed = engine.submit("doomed", SamplingParams(max_tokens=4))
        for future in (doomed, running):
            with pytest.raises(RuntimeError, match="injected engine-thread crash"):
                future.result(timeout=5)
        fresh = Engine.shared(config)
        assert fresh is not engine
        assert fresh.generate(["next"], SamplingParams(max_tokens=5))[0].token_ids == greedy_ref(
            tiny_pair, "next", 5
        )
    finally:
        engine.close(timeout=2)
        Engine.shared(config).close(timeout=2)


# ----- cancellation and timeouts through the LangChain classes ----------------------
async def test_cancelled_seedllm_ainvoke_frees_its_slot_and_others_are_unchanged(engine, tiny_pair):
    llm = SeedLLM(engine=engine, max_tokens=LONG)
    doomed = asyncio.ensure_future(llm.ainvoke(LONG_PROMPT))
    other = asyncio.ensure_future(llm.ainvoke("other", max_tokens=12))
    while len(engine.scheduler.running) < 2:
        await asyncio.sleep(0.005)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    text = await other
    assert text == tiny_pair.tokenizer.decode(
        greedy_ref(tiny_pair, "other", 12), skip_special_tokens=True
    )
    assert await asyncio.to_thread(wait_idle, engine)
    stats = engine.stats()
    assert stats.requests_cancelled == 1 and stats.requests_finished == 1
    assert held_prefix_spans(engine) == 0


@pytest.mark.parametrize("cls", [SeedLLM, ChatSeed])
async def test_cancelled_abatch_frees_every_request_of_the_batch(engine, cls):
    model = cls(engine=engine, max_tokens=LONG)
    prompt = LONG_CHAT_PROMPT if cls is ChatSeed else LONG_PROMPT
    task = asyncio.ensure_future(model.abatch([prompt] * 6))  # 4 run, 2 wait
    while len(engine.scheduler.running) < 4:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(wait_idle, engine)
    assert engine.stats().requests_cancelled == 6 and held_prefix_spans(engine) == 0


def test_leaving_a_seedllm_stream_early_cancels_the_request(engine):
    llm = SeedLLM(engine=engine, max_tokens=LONG)
    for piece in llm.stream(LONG_PROMPT):
        if piece:
            break
    assert wait_idle(engine)
    assert engine.stats().requests_cancelled == 1
    assert engine.stats().spec.generated_tokens < LONG


async def test_leaving_an_engine_astream_early_cancels_the_request(engine):
    pieces = engine.astream(LONG_PROMPT, SamplingParams(max_tokens=LONG, ignore_eos=True))
    async for piece in pieces:
        if piece:
            break
    await pieces.aclose()
    assert await asyncio.to_thread(wait_idle, engine)
    assert engine.stats().requests_cancelled == 1 and held_prefix_spans(engine) == 0


def test_cancelled_waiting_request_is_never_admitted(model_path):
    with Engine(EngineConfig(model=model_path, max_batch_size=1)) as engine:
        first = engine.submit(LONG_PROMPT, SamplingParams(max_tokens=LONG, ignore_eos=True))
        wait_running(engine)
        queued = engine.submit("never runs", SamplingParams(max_tokens=8))
        assert queued.cancel()
        first.cancel()
        assert wait_idle(engine)
        stats = engine.stats()
    assert stats.requests_cancelled == 2
    with pytest.raises(CancelledError):
        queued.result(timeout=0)
    assert stats.spec.prompt_tokens == len(engine.encode(LONG_PROMPT))  # only the first ran


def test_seedllm_request_timeout_raises_and_frees_the_slot(engine):
    llm = SeedLLM(engine=engine, max_tokens=LONG, timeout=0.05)
    with pytest.raises(TimeoutError, match="request_timeout"):
        llm.invoke(LONG_PROMPT)
    assert wait_idle(engine)
    assert engine.stats().requests_failed == 1 and held_prefix_spans(engine) == 0


# ----- load ---------------------------------------------------------------------------
def test_full_queue_in_block_mode_blocks_the_submitter_then_proceeds(model_path, tiny_pair):
    config = EngineConfig(model=model_path, max_batch_size=1, max_queue=1, queue_full="block")
    with Engine(config) as engine:
        first = engine.submit(
            LONG_PROMPT, SamplingParams(max_tokens=LONG, ignore_eos=True), on_delta=slow
        )
        wait_running(engine)
        queued = engine.submit("queued", SamplingParams(max_tokens=5))  # the queue is now full
        late: dict[str, object] = {}
        blocked = threading.Thread(
            target=lambda: late.update(f=engine.submit("late", SamplingParams(max_tokens=5)))
        )
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive() and not late  # waiting for room, not failing
        first.cancel()  # frees the slot: "queued" is admitted, the queue has room
        blocked.join(10)
        assert not blocked.is_alive()
        assert queued.result(timeout=30).token_ids == greedy_ref(tiny_pair, "queued", 5)
        assert late["f"].result(timeout=30).token_ids == greedy_ref(tiny_pair, "late", 5)


def test_submitter_blocked_on_a_full_queue_gets_engine_closed_on_close(model_path):
    config = EngineConfig(model=model_path, max_batch_size=1, max_queue=1, queue_full="block")
    engine = Engine(config)
    engine.submit(LONG_PROMPT, SamplingParams(max_tokens=LONG, ignore_eos=True), on_delta=slow)
    wait_running(engine)
    engine.submit("queued", SamplingParams(max_tokens=5))
    errors: list[BaseException] = []

    def submit_late() -> None:
        try:
            engine.submit("late", SamplingParams(max_tokens=5))
        except BaseException as exc:
            errors.append(exc)

    blocked = threading.Thread(target=submit_late)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()
    engine.close()
    blocked.join(5)
    assert not blocked.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], EngineClosedError)


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from langchain_seed.engine import Engine, EngineConfig, SamplingParams

    engine = Engine(EngineConfig(model=sys.argv[1], max_batch_size=1))
    forward = engine.runner.forward

    def big_model_forward(*args, **kwargs):  # a step of a real model: seconds of torch work
        a = torch.randn(400, 400)
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            a = torch.tanh(a @ a)
        return forward(*args, **kwargs)

    engine.runner.forward = big_model_forward
    futures = engine.submit_many(["stream forever"] * 3, SamplingParams(max_tokens=900))
    while not engine.scheduler.running:
        time.sleep(0.01)
    time.sleep(0.5)  # inside a step
    print("RUNNING", flush=True)
    """
)


def test_process_exit_mid_step_is_prompt_and_clean(model_path, tmp_path):
    """Exit while the engine thread is inside a 2-second step with hours of work queued."""
    script = tmp_path / "exit_busy.py"
    script.write_text(EXIT_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), model_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # imports and model load: not timed
        assert line.strip() == "RUNNING"
        started = time.monotonic()
        code = proc.wait(timeout=60)
        elapsed = time.monotonic() - started
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    assert code == 0, f"exit status {code}: {stderr[-300:]}"
    assert elapsed < 15.0, f"exit took {elapsed:.1f} s"


# ----- soak -----------------------------------------------------------------------------
def load_soak():
    spec = importlib.util.spec_from_file_location("seed_soak", ROOT / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_soak_100_mixed_requests_from_threads_and_a_loop_lose_and_leak_nothing(model_path):
    soak = load_soak()
    report = soak.run_soak(model_path, 100, threads=4, warmup=0, check_rss=False, seed=3)
    assert report.violations == []
    kinds = ("plain", "group_greedy", "group_cancel", "stream", "cancelled", "invalid_rejected")
    for kind in (*kinds, "timed_out"):
        assert report.outcomes[kind] > 0, f"the mix had no {kind} request"
    assert report.engine_stats["requests_cancelled"] > 0
