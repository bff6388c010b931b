"""Every engine's steps run on the one process-wide compute thread (one OpenMP team)."""

from __future__ import annotations

import threading
import time

import pytest

from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.serving import compute


def test_run_returns_results_raises_errors_and_nests_inline():
    assert compute.run(lambda: threading.current_thread().name) == "seed-compute"
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)
    assert compute.run(lambda: compute.run(lambda: 42)) == 42  # no deadlock from inside


def test_two_engines_step_on_the_same_thread(tiny_pair):
    names: set[str] = set()
    path = str(tiny_pair.target_path)
    first, second = Engine(EngineConfig(model=path)), Engine(EngineConfig(model=path, gamma=3))
    with first, second:
        for engine in (first, second):
            future = engine.submit(
                "the cat", SamplingParams(max_tokens=4),
                on_delta=lambda _: names.add(threading.current_thread().name),
            )  # fmt: skip
            future.result(timeout=30)
    assert names == {"seed-compute"}


def test_close_from_a_streaming_callback_does_not_wait_for_itself(tiny_pair):
    engine = Engine(EngineConfig(model=str(tiny_pair.target_path)))
    took: list[float] = []

    def close_now(_: str) -> None:
        if not took:
            t0 = time.perf_counter()
            engine.close()
            took.append(time.perf_counter() - t0)

    future = engine.submit("stream forever", SamplingParams(max_tokens=200), on_delta=close_now)
    try:
        future.result(timeout=30)
    except Exception:
        pass
    assert took and took[0] < 1.0
    assert engine.closed
