"""The drivers of the reasoning runs: a run's model calls and events, sync or async.

:func:`drive` runs a reasoning generator synchronously and :func:`adrive` on an event loop,
so each runnable has one body for ``invoke`` and ``ainvoke``; :func:`call_model` /
:func:`acall_model` send one :class:`~langchain_seed.model_calls.call.ModelCall` (its
prompts to the model as its kind takes them: :mod:`~langchain_seed.model_calls.requests`),
pipelined follow-ups included.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import RunnableConfig

from langchain_seed.model_calls.call import CallResult, ModelCall, Run, Step
from langchain_seed.model_calls.requests import arequest, concurrency, request, single

T = TypeVar("T")


# ---------------------------------------------------------------------- drivers


def drive(run: Run[T], llm: BaseLanguageModel, config: RunnableConfig) -> T:
    """Run a reasoning generator to its end, calling ``llm`` synchronously.

    Args:
        run: the generator (see the module docstring).
        llm: any LangChain LLM or chat model.
        config: the run's config (callbacks, tags, metadata), for calls and events that
            bring none of their own.

    Returns:
        The generator's return value.
    """
    steps = _Steps(run)
    for step in steps:
        if isinstance(step, ModelCall):
            steps.reply = call_model(llm, step, config)
        else:
            dispatch_custom_event(step.name, step.data, config=step.config or config)
    return steps.value


async def adrive(run: Run[T], llm: BaseLanguageModel, config: RunnableConfig) -> T:
    """Async :func:`drive` (``agenerate`` / ``abatch``, events dispatched on the loop).

    The run's own code (building prompts, parsing every sample with a parser that may be
    the user's, a task's checks) runs on a worker thread, one step at a time, never on the
    event loop: a slow or pathological parse must not stall the other coroutines of the
    loop. A thread hop per step costs ~0.1 ms against model calls of seconds.
    """
    steps = _Steps(run)
    step_iter = iter(steps)
    while (step := await asyncio.to_thread(next, step_iter, None)) is not None:
        if not isinstance(step, ModelCall):
            await adispatch_custom_event(step.name, step.data, config=step.config or config)
        else:
            steps.reply = await acall_model(llm, step, config)
    return steps.value


class _Steps(Generic[T]):
    """Iterates a run's steps; set ``reply`` to answer a model call, ``value`` is the end."""

    def __init__(self, run: Run[T]) -> None:
        self._run = run
        self.reply: CallResult | None = None
        self.value: T

    def __iter__(self) -> Iterator[Step]:
        while True:
            reply, self.reply = self.reply, None
            try:
                yield self._run.send(reply)
            except StopIteration as done:
                self.value = done.value
                return


# ---------------------------------------------------------------------- one call


def call_model(llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig) -> CallResult:
    """Submit every prompt of ``call`` at once and wait for the samples.

    Args:
        llm: any LangChain LLM or chat model.
        call: the prompts, samples per prompt and sampling settings.
        config: the run's config, for a call without configs of its own.

    Returns:
        ``call.n`` samples per prompt.

    Raises:
        RuntimeError: when the model returns another number of samples.
    """
    if call.then is not None:
        return _pipelined(llm, call, config)
    start = time.perf_counter()
    result = request(llm, call, config)
    result.seconds = time.perf_counter() - start
    return result


async def acall_model(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> CallResult:
    """Async :func:`call_model` (``agenerate`` / ``abatch``)."""
    if call.then is not None:
        return await _apipelined(llm, call, config)
    start = time.perf_counter()
    result = await arequest(llm, call, config)
    result.seconds = time.perf_counter() - start
    return result


def _joined(
    rows: list[CallResult], follow_ups: list[tuple[ModelCall, CallResult]], start: float
) -> CallResult:
    """A pipelined call's result: its prompts' rows, its follow-ups in the order they ended."""
    engine_stats = next((r.engine_stats for r in reversed(rows) if r.engine_stats), None)
    samples = [r.samples[0] for r in rows]
    seconds = time.perf_counter() - start
    return CallResult(samples, engine_stats, seconds, follow_ups)


def _pipelined(llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig) -> CallResult:
    """Every prompt on a thread of its own; each prompt's follow-up submitted when it ends."""
    assert call.then is not None
    then, start, lock = call.then, time.perf_counter(), threading.Lock()
    follow_ups: list[tuple[ModelCall, CallResult]] = []

    def one(i: int) -> CallResult:
        row = call_model(llm, single(call, i), config)
        with lock:  # the search's callbacks run one at a time
            follow = then(i, row.samples[0])
        if follow is not None:
            result = call_model(llm, follow, config)
            with lock:
                follow_ups.append((follow, result))
                if follow.done is not None:
                    follow.done(result)
        return row

    with ThreadPoolExecutor(max_workers=concurrency(call, config)) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, one, i) for i in range(len(call.prompts))
        ]
        rows = [f.result() for f in futures]
    return _joined(rows, follow_ups, start)


async def _apipelined(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> CallResult:
    """Async :func:`_pipelined`: one task per prompt."""
    assert call.then is not None
    then, start, lock = call.then, time.perf_counter(), asyncio.Lock()
    follow_ups: list[tuple[ModelCall, CallResult]] = []

    async def one(i: int) -> CallResult:
        row = await acall_model(llm, single(call, i), config)
        async with lock:  # the search's callbacks run one at a time, off the loop (adrive)
            follow = await asyncio.to_thread(then, i, row.samples[0])
        if follow is not None:
            result = await acall_model(llm, follow, config)
            follow_ups.append((follow, result))
            if follow.done is not None:
                async with lock:  # storing outputs: cheap, but not while a callback runs
                    follow.done(result)
        return row

    limit = asyncio.Semaphore(concurrency(call, config))

    async def limited(i: int) -> CallResult:
        async with limit:
            return await one(i)

    rows = await asyncio.gather(*(limited(i) for i in range(len(call.prompts))))
    return _joined(list(rows), follow_ups, start)
